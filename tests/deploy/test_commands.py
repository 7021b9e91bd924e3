"""Every `segflow` command line the chart and docker-compose.yml run parses with segflow's own
argument parser, so a renamed subcommand or option breaks this test, not a deployment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cli.main import SUBCOMMANDS, build_parser
from tests.deploy.conftest import VALUES_FILES, pod_specs


def _command_lines(
    manifests: Callable[[str], list[dict[str, Any]]], compose: dict[str, Any]
) -> list[tuple[str, list[str]]]:
    lines = [
        (f"{values}: {where}/{container['name']}", [str(a) for a in container["args"]])
        for values in VALUES_FILES
        for where, pod in pod_specs(manifests(values))
        for container in pod["containers"]
        if "command" not in container  # the emulator runs python, not segflow
    ]
    lines += [
        (f"compose: {name}", list(service["command"]))
        for name, service in compose["services"].items()
        if service.get("image", "").startswith("segflow") and "entrypoint" not in service
    ]
    return lines


def test_every_command_line_parses(
    manifests: Callable[[str], list[dict[str, Any]]],
    compose_model: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    modules = {name: module for name, module, _ in SUBCOMMANDS}
    parser = build_parser()
    parsed = set()
    for where, args in _command_lines(manifests, compose_model):
        assert args and args[0] in modules, f"{where}: unknown subcommand {args[:1]}"
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(
                f"{where}: `segflow {' '.join(args)}` does not parse:\n{capsys.readouterr().err}"
            )
        parsed.add(args[0])
    assert {"ingest", "process", "sink", "topics", "reverse-etl"} <= parsed
