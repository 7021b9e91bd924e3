from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from runtime.settings import (
    EMULATOR_PASSWORD,
    KafkaSettings,
    SecretFileSource,
    SegflowSettings,
    WarehouseSettings,
    build_settings,
    secret_file_envs,
)
from schemas.errors import ConfigError
from sinks.snowflake.settings import SinkSettings


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


# ------------------------------------------------------------------ no default credential


def test_no_password_is_assumed_outside_the_emulator() -> None:
    with pytest.raises(ValidationError, match="SEGFLOW_SNOWFLAKE_PASSWORD"):
        WarehouseSettings(account="myorg-acct")
    with pytest.raises(ValidationError, match="not the emulator"):
        WarehouseSettings(account="myorg-acct", password=SecretStr(""))
    with pytest.raises(ConfigError, match="WarehouseSettings"):
        build_settings(WarehouseSettings, account="myorg-acct")
    given = WarehouseSettings(account="myorg-acct", password=SecretStr("hunter2"))
    assert given.connect_kwargs("sink")["password"] == "hunter2"


def test_the_emulator_alone_gets_its_fixed_password(monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = WarehouseSettings()
    assert emulator.password is not None
    assert emulator.password.get_secret_value() == EMULATOR_PASSWORD
    assert emulator.connect_kwargs("sink")["password"] == EMULATOR_PASSWORD
    monkeypatch.setenv("SEGFLOW_SNOWFLAKE_ACCOUNT", "myorg-acct")
    monkeypatch.setenv("SEGFLOW_SNOWFLAKE_PRIVATE_KEY_PATH", "/keys/k.p8")
    assert build_settings(WarehouseSettings).password is None
    assert "password" not in build_settings(WarehouseSettings).connect_kwargs("sink")


# ------------------------------------------------------------------ secrets from files


def test_a_secret_reads_from_its_file_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")  # the newline editors and `echo` add is not part of it
    monkeypatch.setenv("SEGFLOW_SNOWFLAKE_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("SEGFLOW_SNOWFLAKE_ACCOUNT", "myorg-acct")
    settings = build_settings(WarehouseSettings)
    assert settings.password is not None
    assert settings.password.get_secret_value() == "from-a-file"


def test_a_secret_and_its_file_variable_both_set_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "sasl"
    secret.write_text("x")
    monkeypatch.setenv("SEGFLOW_KAFKA_SASL_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("SEGFLOW_KAFKA_SASL_PASSWORD", "y")
    with pytest.raises(ConfigError, match="SEGFLOW_KAFKA_SASL_PASSWORD and "):
        build_settings(KafkaSettings)


def test_an_unreadable_secret_file_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGFLOW_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"SEGFLOW_KAFKA_SASL_PASSWORD_FILE=.*cannot read"):
        build_settings(KafkaSettings)


def settings_classes() -> list[type[SegflowSettings]]:
    """Every settings class of the packages' settings modules (subcommands' own ones too)."""
    for package in ("ingest", "processors", "sinks", "runtime"):
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            if info.name.endswith("settings"):
                importlib.import_module(info.name)
    found, pending = [], list(SegflowSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_secret_of_every_component_reads_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each SecretStr field of each settings class (nested ones included) has its _FILE twin."""
    value = "s" * 48
    secret = tmp_path / "secret"
    secret.write_text(value)
    seen = set()
    for cls in settings_classes():
        for name, env in secret_file_envs(cls).items():
            with monkeypatch.context() as patch:
                patch.setenv(env, str(secret))
                assert SecretFileSource(cls)() == {name: value}, env
            seen.add(env)
    assert {
        "SEGFLOW_SNOWFLAKE_PASSWORD_FILE",
        "SEGFLOW_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE_FILE",
        "SEGFLOW_KAFKA_SASL_PASSWORD_FILE",
        "SEGFLOW_PROCESS_PII_HMAC_KEY_FILE",
        "SEGFLOW_INGEST_WEBHOOK_SECRET_FILE",
    } <= seen


def test_a_nested_secret_reads_from_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "sasl"
    secret.write_text("nested")
    monkeypatch.setenv("SEGFLOW_KAFKA_SASL_PASSWORD_FILE", str(secret))
    sink = build_settings(SinkSettings)
    assert sink.kafka.sasl_password is not None
    assert sink.kafka.sasl_password.get_secret_value() == "nested"
