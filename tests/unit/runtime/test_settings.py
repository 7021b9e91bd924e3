from __future__ import annotations

import pytest
from pydantic import SecretStr

from runtime.settings import KafkaSettings, WarehouseSettings, build_settings
from schemas.errors import ConfigError


def test_env_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGFLOW_KAFKA_BOOTSTRAP", "broker:9999")
    monkeypatch.setenv("SEGFLOW_KAFKA_TOPIC_PREFIX", "t1.")
    kafka = build_settings(KafkaSettings)
    assert kafka.bootstrap == "broker:9999"
    assert kafka.topics.raw("track") == "t1.segment.raw.track"


def test_bad_value_names_field_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGFLOW_SNOWFLAKE_PORT", "eighty")
    with pytest.raises(ConfigError, match=r"port \(SEGFLOW_SNOWFLAKE_PORT\)"):
        build_settings(WarehouseSettings)


def test_secrets_are_not_shown() -> None:
    settings = WarehouseSettings(password=SecretStr("hunter2"))
    assert "hunter2" not in repr(settings)
    assert settings.connect_kwargs("sink")["password"] == "hunter2"


def test_production_connection_uses_key_pair_and_tags() -> None:
    settings = WarehouseSettings(
        account="xy12345.eu-west-1",
        private_key_path="/keys/segflow.p8",  # type: ignore[arg-type]
        role="SEGFLOW_LOADER",
        warehouse="LOAD_WH",
    )
    kwargs = settings.connect_kwargs("sink")
    assert kwargs["authenticator"] == "SNOWFLAKE_JWT"
    assert kwargs["private_key_file"] == "/keys/segflow.p8"
    assert "password" not in kwargs and "host" not in kwargs and "port" not in kwargs
    assert kwargs["role"] == "SEGFLOW_LOADER"
    assert kwargs["session_parameters"]["QUERY_TAG"] == "segflow:sink"
    assert not settings.is_emulator


def test_settings_are_frozen() -> None:
    settings = KafkaSettings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError
        settings.bootstrap = "x"  # type: ignore[misc]


def test_emulator_endpoint_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = WarehouseSettings().connect_kwargs("sink")
    assert (kwargs["host"], kwargs["port"], kwargs["protocol"]) == ("127.0.0.1", 8090, "http")
    monkeypatch.setenv("SEGFLOW_SNOWFLAKE_PORT", "9000")
    assert build_settings(WarehouseSettings).connect_kwargs("x")["port"] == 9000
