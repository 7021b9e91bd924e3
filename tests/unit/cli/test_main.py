from __future__ import annotations

import pytest

from cli.main import SUBCOMMANDS, build_parser, main


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in (
        "ingest",
        "process",
        "sink",
        "up",
        "demo",
        "backfill",
        "replay",
        "reverse-etl",
        "forget",
        "topics",
        "services",
        "query",
    ):
        assert name in out
    assert {s[0] for s in SUBCOMMANDS} >= {"ingest", "process", "sink", "up", "demo"}


def test_a_subcommand_without_its_module_breaks_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No "not built yet" placeholder: a listed subcommand whose module is missing is a bug."""
    monkeypatch.setattr("cli.main.SUBCOMMANDS", [*SUBCOMMANDS, ("nope", "nope", "missing")])
    with pytest.raises(ModuleNotFoundError, match=r"cli\.commands\.nope"):
        build_parser()


def test_options_show_their_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["topics", "--help"])
    out = capsys.readouterr().out
    assert "--kafka-bootstrap" in out
    assert "SEGFLOW_KAFKA_BOOTSTRAP" in out


def test_option_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.options import settings_from_args
    from runtime.settings import KafkaSettings

    monkeypatch.setenv("SEGFLOW_KAFKA_BOOTSTRAP", "from-env:1")
    parser = build_parser()
    args = parser.parse_args(["topics", "check", "--kafka-topic-prefix", "p."])
    kafka = settings_from_args(KafkaSettings, args)
    assert kafka.bootstrap == "from-env:1"
    assert kafka.topic_prefix == "p."


def test_bad_option_value_exits_with_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["topics", "check", "--kafka-security-protocol", "CARRIER_PIGEON"])
    assert code == 78
    assert "security_protocol (SEGFLOW_KAFKA_SECURITY_PROTOCOL)" in capsys.readouterr().err
