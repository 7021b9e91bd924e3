"""`segflow ingest`: options with their environment twins; a bad setting stops it cleanly."""

from __future__ import annotations

import argparse

import pytest

from cli.commands import ingest
from cli.main import build_parser, main
from cli.options import settings_from_args
from ingest.settings import IngestSettings
from schemas.errors import ConfigError


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


def _ingest_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ingest.configure(parser)
    return parser.parse_args(list(argv))


def test_the_embedded_rules_stop_the_edge_without_the_development_opt_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SEGFLOW_RULES_FILE", raising=False)
    monkeypatch.delenv("SEGFLOW_ALLOW_DEV_DEFAULTS", raising=False)
    served: list[object] = []

    def serve(settings: object, rules: object) -> int:
        served.append(rules)
        return 0

    monkeypatch.setattr(ingest, "serve", serve)
    with pytest.raises(ConfigError, match="SEGFLOW_RULES_FILE"):
        ingest.run(_ingest_args())
    assert served == []
    monkeypatch.setenv("SEGFLOW_ALLOW_DEV_DEFAULTS", "true")
    assert ingest.run(_ingest_args()) == 0 and len(served) == 1


def test_secret_options_say_they_show_in_ps_and_name_their_file_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEGFLOW_INGEST_WEBHOOK_SECRET", raising=False)
    parser = argparse.ArgumentParser()
    ingest.configure(parser)
    text = parser.format_help()
    assert "SEGFLOW_INGEST_WEBHOOK_SECRET_FILE" in text and "visible in ps" in text
    settings = settings_from_args(IngestSettings, _ingest_args("--ingest-webhook-secret", "s3cret"))
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == "s3cret"
    err = capsys.readouterr().err
    assert "SEGFLOW_INGEST_WEBHOOK_SECRET given on the command line" in err
    assert "s3cret" not in err
    settings_from_args(IngestSettings, _ingest_args("--ingest-port", "9000"))
    assert capsys.readouterr().err == ""
