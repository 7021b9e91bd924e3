"""`segflow ingest`: options with their environment twins; a bad setting stops it cleanly."""

from __future__ import annotations

import pytest

from cli.main import build_parser, main


def test_help_lists_the_edge_settings_with_their_environment_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest", "--help"])
    text = capsys.readouterr().out
    for env in (
        "SEGFLOW_INGEST_PORT",
        "SEGFLOW_INGEST_PRODUCE_TIMEOUT_S",
        "SEGFLOW_INGEST_WEBHOOK_SECRET",
        "SEGFLOW_KAFKA_BOOTSTRAP",
        "SEGFLOW_RULES_FILE",
    ):
        assert env in text
    assert "(default 8088)" in text


def test_an_invalid_setting_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "--ingest-port", "not-a-port"]) == 78
    assert "SEGFLOW_INGEST_PORT" in capsys.readouterr().err
