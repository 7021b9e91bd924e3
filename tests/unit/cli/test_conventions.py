"""The command line's conventions, checked over every subcommand (new ones included):

- `segflow --version` prints the package version;
- a boolean option is a `--x/--no-x` pair (no bare on-switches), settings-generated ones too,
  and their environment twins still take true/false;
- a command whose output is a table takes `--output table|json`.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
from collections.abc import Iterator
from importlib import metadata

import pytest

from cli.main import SUBCOMMANDS, build_parser, main
from cli.options import add_settings_options, settings_from_args
from cli.output import OUTPUT_FORMATS
from cli.reference import settings_classes
from runtime.settings import ObservabilitySettings, SegflowSettings, WarehouseSettings

BooleanOptional = argparse.BooleanOptionalAction

# Printing aligned columns (a formatter of tables or plans, padded cells) makes a table command.
TABLE_MARKERS = re.compile(r"format_table|format_\w+_plan|\.ljust\(|:[<>]\d+\}")
# Commands known to print tables, whatever their source looks like.
TABLE_COMMANDS = {"query", "services", "replay reset", "replay copy", "demo"}


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, named like its command line ("replay reset")."""
    pending: list[tuple[str, argparse.ArgumentParser]] = [("", build_parser())]
    while pending:
        name, parser = pending.pop()
        children = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if name:
            yield name, parser
        for action in children:
            for child, sub in action.choices.items():
                pending.append((f"{name} {child}".strip(), sub))


def _leaves() -> list[tuple[str, argparse.ArgumentParser]]:
    """The parsers that run something (not the ones that only choose a subcommand)."""
    return [
        (name, parser)
        for name, parser in _parsers()
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    ]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"segflow {metadata.version('segflow')}"


def test_the_walk_finds_every_subcommand_and_nested_action() -> None:
    leaves = {name for name, _ in _leaves()}
    assert {"up", "query", "replay reset", "replay copy", "services"} <= leaves
    assert {s[0] for s in SUBCOMMANDS} <= {name.split()[0] for name in leaves}


@pytest.mark.parametrize("name,parser", _leaves(), ids=lambda v: v if isinstance(v, str) else "")
def test_no_bare_on_switches(name: str, parser: argparse.ArgumentParser) -> None:
    """A yes/no option is `--x/--no-x` (argparse.BooleanOptionalAction), so a default can be
    turned off from the command line as well as on; no `store_true`/`store_false`."""
    bare = [
        "/".join(a.option_strings)
        for a in parser._actions
        if isinstance(a, argparse._StoreTrueAction | argparse._StoreFalseAction)
    ]
    assert not bare, f"segflow {name}: bare on/off switches {bare}; use BooleanOptionalAction"
    for action in parser._actions:
        if isinstance(action, argparse.BooleanOptionalAction):
            longs = [s for s in action.option_strings if s.startswith("--")]
            assert any(s.startswith("--no-") for s in longs), (name, longs)


def _has_output(parser: argparse.ArgumentParser) -> bool:
    return any("--output" in a.option_strings for a in parser._actions)


@pytest.mark.parametrize("top", [s[0] for s in SUBCOMMANDS])
def test_table_commands_take_output(top: str) -> None:
    """A listed table command, and a command whose module prints aligned columns (in each of its
    actions; or, with sub-actions, in at least one), takes `--output table|json`."""
    module = importlib.import_module(f"cli.commands.{dict((s[0], s[1]) for s in SUBCOMMANDS)[top]}")
    leaves = [(n, p) for n, p in _leaves() if n.split()[0] == top]
    for name, parser in leaves:
        if name in TABLE_COMMANDS:
            assert _has_output(parser), f"segflow {name} prints a table: give it --output"
        for action in parser._actions:
            if "--output" in action.option_strings:
                assert tuple(action.choices or ()) == OUTPUT_FORMATS, name
                assert action.default == "table", name
    if TABLE_MARKERS.search(inspect.getsource(module)):
        with_output = [n for n, p in leaves if _has_output(p)]
        assert with_output, f"segflow {top} prints a table: give it --output table|json"
        if [n for n, _ in leaves] == [top]:
            assert with_output == [top]


@pytest.mark.parametrize("cls", settings_classes(), ids=lambda c: c.__name__)
def test_settings_booleans_are_pairs(cls: type[SegflowSettings]) -> None:
    parser = argparse.ArgumentParser()
    add_settings_options(parser, cls)
    pairs = {a.option_strings[0]: a for a in parser._actions if isinstance(a, BooleanOptional)}
    prefix = str(cls.model_config.get("env_prefix", ""))
    for name, field in cls.model_fields.items():
        if field.annotation not in (bool, bool | None):
            continue
        flag = "--" + (prefix + name).removeprefix("SEGFLOW_").lower().replace("_", "-")
        assert flag in pairs, f"{cls.__name__}.{name}: no {flag}/--no-{flag[2:]} pair"
        action = pairs[flag]
        assert action.option_strings == [flag, "--no-" + flag[2:]]
        # unset on the command line (None), so the environment or the default counts
        assert getattr(parser.parse_args([]), action.dest) is None
        assert getattr(parser.parse_args([flag]), action.dest) is True
        assert getattr(parser.parse_args(["--no-" + flag[2:]]), action.dest) is False


def test_the_flag_wins_over_its_env_twin_and_unset_leaves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`bool` (ObservabilitySettings.allow_dev_defaults) and `bool | None`
    (WarehouseSettings.strict): env true/false as ever, the flag over it, unset the default."""
    parser = argparse.ArgumentParser()
    add_settings_options(parser, ObservabilitySettings)
    add_settings_options(parser, WarehouseSettings)

    def both(argv: list[str]) -> tuple[bool, bool | None]:
        args = parser.parse_args(argv)
        obs = settings_from_args(ObservabilitySettings, args)
        return obs.allow_dev_defaults, settings_from_args(WarehouseSettings, args).strict

    monkeypatch.delenv("SEGFLOW_ALLOW_DEV_DEFAULTS", raising=False)
    monkeypatch.delenv("SEGFLOW_SNOWFLAKE_STRICT", raising=False)
    assert both([]) == (False, None)
    monkeypatch.setenv("SEGFLOW_ALLOW_DEV_DEFAULTS", "true")
    monkeypatch.setenv("SEGFLOW_SNOWFLAKE_STRICT", "false")
    assert both([]) == (True, False)
    assert both(["--no-allow-dev-defaults", "--snowflake-strict"]) == (False, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--snowflake-strict", "false"])  # a pair takes no value
