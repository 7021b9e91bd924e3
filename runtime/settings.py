"""Settings shared by the deployables: Kafka and warehouse connections, the rules file, logging.

Each deployable has one frozen settings class (``IngestSettings``, ``ProcessorSettings``,
``SinkSettings``, ...) that embeds these. Every field reads from ``SEGFLOW_<PREFIX>_<NAME>``;
``segflow <command> --help`` lists them. Settings are built once in the entry point and passed
down; nothing else reads ``os.environ``.

Secrets (every ``SecretStr`` field) also read from a file: ``SEGFLOW_<PREFIX>_<NAME>_FILE`` names
a file whose content is the value (a Docker or Kubernetes secret file), so a secret never has to
be in the environment or on a command line. Setting both the variable and its ``_FILE`` twin is
a configuration error.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from schemas.errors import ConfigError
from schemas.topics import Topics

# The emulator accepts any password; this one is sent only when the account is the emulator's.
EMULATOR_PASSWORD = "segflow"
# Suffix of the environment variable that names a file holding a secret setting's value.
FILE_SUFFIX = "_FILE"


def is_secret_field(annotation: Any) -> bool:
    """True for a ``SecretStr`` field (optional or not)."""
    if annotation is SecretStr:
        return True
    return any(a is SecretStr for a in typing.get_args(annotation))


def secret_file_envs(cls: type[BaseSettings]) -> dict[str, str]:
    """Field name -> the ``..._FILE`` environment variable of each secret field of `cls`."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {
        name: (prefix + name + FILE_SUFFIX).upper()
        for name, field in cls.model_fields.items()
        if is_secret_field(field.annotation)
    }


class SecretFileSource(PydanticBaseSettingsSource):
    """Secret values read from the files that ``SEGFLOW_..._FILE`` variables name."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ does the work

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        prefix = str(self.settings_cls.model_config.get("env_prefix", ""))
        for name, file_env in secret_file_envs(self.settings_cls).items():
            path = os.environ.get(file_env)
            if not path:
                continue
            env = (prefix + name).upper()
            if os.environ.get(env):
                raise ConfigError(f"{env} and {file_env} are both set: keep one")
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{file_env}={path}: cannot read: {exc.strerror}") from exc
            values[name] = text.rstrip("\r\n")
        return values


class SegflowSettings(BaseSettings):
    """Base: frozen, env-driven, unknown env vars ignored; secrets also from ``..._FILE``."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, SecretFileSource(settings_cls))


class KafkaSettings(SegflowSettings):
    """How every component reaches Kafka."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_KAFKA_")

    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port,...")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when security_protocol is SASL_*"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password")
    ssl_ca_location: Path | None = Field(None, description="CA bundle for SSL")
    topic_prefix: str = Field("", description="Prefix put before every topic name")
    client_id: str = Field("segflow", description="Kafka client.id base")

    @property
    def topics(self) -> Topics:
        return Topics(prefix=self.topic_prefix)


class TopicSettings(SegflowSettings):
    """How `segflow topics` replicates the topics it creates (unset: as the cluster suggests)."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_TOPICS_")

    replication_factor: int | None = Field(
        None,
        ge=1,
        description="Replicas of every topic; unset: 3 on a cluster of 3 or more live brokers, "
        "else one per broker (the single local broker: 1)",
    )
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of every topic; unset: replication factor - 1, "
        "at least 1 (3 replicas: 2)",
    )


class WarehouseSettings(SegflowSettings):
    """The Snowflake connection. Defaults point at the local emulator; production sets account."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_SNOWFLAKE_")

    account: str = Field("fakesnow", description="Snowflake account identifier")
    user: str = Field("segflow", description="Snowflake user")
    password: SecretStr | None = Field(
        None,
        description="Password (ignored when private_key_path is set); required outside the "
        "emulator unless private_key_path is set (the emulator: its fixed one)",
    )
    private_key_path: Path | None = Field(None, description="PEM private key for key-pair auth")
    private_key_passphrase: SecretStr | None = Field(None, description="Passphrase of the key")
    database: str = Field("SEGFLOW", description="Database holding one schema per source")
    warehouse: str | None = Field(None, description="Virtual warehouse to run in")
    role: str | None = Field(None, description="Role to assume")
    host: str | None = Field(
        None, description="Host override; unset: the account's own host (emulator: 127.0.0.1)"
    )
    port: int | None = Field(None, description="Port override; unset: 443 (emulator: 8090)")
    protocol: Literal["http", "https"] | None = Field(
        None, description="Protocol override; unset: https (emulator: http)"
    )
    login_timeout_s: int = Field(30, description="Seconds to wait for a login")
    network_timeout_s: int = Field(55, description="Seconds a statement may take (keep < 60)")
    strict: bool | None = Field(
        None,
        description="Refuse statements Snowflake would refuse (its documented limits); "
        "unset: on for the emulator only",
    )

    @model_validator(mode="before")
    @classmethod
    def _emulator_password(cls, data: Any) -> Any:
        # The emulator's fixed password, so every client (the connector, dbt profiles) sees one;
        # any other account keeps what it is given.
        if (
            isinstance(data, dict)
            and data.get("account", "fakesnow") == "fakesnow"
            and not data.get("password")
            and not data.get("private_key_path")
        ):
            return {**data, "password": SecretStr(EMULATOR_PASSWORD)}
        return data

    @model_validator(mode="after")
    def _credentials(self) -> WarehouseSettings:
        # No default credential outside the emulator: a Snowflake account needs one of its own.
        if self.is_emulator or self.private_key_path is not None:
            return self
        if self.password is None or not self.password.get_secret_value():
            raise ValueError(
                f"account {self.account!r} is not the emulator: set SEGFLOW_SNOWFLAKE_PASSWORD "
                "(or SEGFLOW_SNOWFLAKE_PASSWORD_FILE) or SEGFLOW_SNOWFLAKE_PRIVATE_KEY_PATH"
            )
        return self

    @property
    def is_emulator(self) -> bool:
        return self.account == "fakesnow"

    @property
    def strict_checks(self) -> bool:
        """Check statements against Snowflake's limits (sinks/snowflake/strict.py)."""
        return self.is_emulator if self.strict is None else self.strict

    def connect_kwargs(self, component: str) -> dict[str, Any]:
        """Keyword arguments for ``snowflake.connector.connect``, tagged with the component."""
        kwargs: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "database": self.database,
            "login_timeout": self.login_timeout_s,
            "network_timeout": self.network_timeout_s,
            "socket_timeout": self.network_timeout_s,
            "session_parameters": {
                "QUERY_TAG": f"segflow:{component}",
                "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False,
            },
            "application": "segflow",
        }
        if self.private_key_path is not None:
            kwargs["private_key_file"] = str(self.private_key_path)
            if self.private_key_passphrase is not None:
                kwargs["private_key_file_pwd"] = self.private_key_passphrase.get_secret_value()
            kwargs["authenticator"] = "SNOWFLAKE_JWT"
        elif self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        if self.warehouse:
            kwargs["warehouse"] = self.warehouse
        if self.role:
            kwargs["role"] = self.role
        host, port, protocol = self.endpoint
        if host:
            kwargs["host"] = host
        if port:
            kwargs["port"] = port
        if protocol:
            kwargs["protocol"] = protocol
        return kwargs

    @property
    def endpoint(self) -> tuple[str | None, int | None, str | None]:
        """(host, port, protocol) to connect to; None leaves it to the connector."""
        if self.is_emulator:
            return self.host or "127.0.0.1", self.port or 8090, self.protocol or "http"
        return self.host, self.port, self.protocol


class ObservabilitySettings(SegflowSettings):
    """Logging and the metrics/health server of a process."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="Log level (the Kafka, Faust and Snowflake client libraries log at WARNING "
        "or above, except group joins, transactional producers and table recovery)",
    )
    log_format: Literal["json", "text"] = Field("json", description="Log line format")
    rules_file: Path | None = Field(
        None,
        description="YAML rules file (write keys, PII, tracking plan); embedded default if unset",
    )
    allow_dev_defaults: bool = Field(
        False,
        description="Local development only: accept the public development write keys and PII "
        "key (segflow up and docker compose set it); logs a WARNING at every start",
    )


S = TypeVar("S", bound=SegflowSettings)


def build_settings(cls: type[S], **overrides: Any) -> S:
    """Build a settings class from the environment plus explicit overrides.

    A validation error becomes a ConfigError naming the field and its environment variable.
    """
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a check across fields: its message names them
                problems.append(err["msg"])
                continue
            field = ".".join(str(p) for p in err["loc"])
            env = (prefix + str(err["loc"][0])).upper() if err["loc"] else prefix
            problems.append(f"{field} ({env}): {err['msg']}")
        raise ConfigError(f"invalid {cls.__name__}: " + "; ".join(problems)) from exc
