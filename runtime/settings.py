"""Settings shared by the deployables: Kafka and warehouse connections, the rules file, logging.

Each deployable has one frozen settings class (``IngestSettings``, ``ProcessorSettings``,
``SinkSettings``, ...) that embeds these. Every field reads from ``SEGFLOW_<PREFIX>_<NAME>``;
``segflow <command> --help`` lists them. Settings are built once in the entry point and passed
down; nothing else reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import ConfigError
from schemas.topics import Topics


class SegflowSettings(BaseSettings):
    """Base: frozen, env-driven, unknown env vars ignored."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True)


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


class WarehouseSettings(SegflowSettings):
    """The Snowflake connection. Defaults point at the local emulator; production sets account."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_SNOWFLAKE_")

    account: str = Field("fakesnow", description="Snowflake account identifier")
    user: str = Field("segflow", description="Snowflake user")
    password: SecretStr | None = Field(
        SecretStr("segflow"), description="Password (ignored when private_key_path is set)"
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

    @property
    def is_emulator(self) -> bool:
        return self.account == "fakesnow"

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
            field = ".".join(str(p) for p in err["loc"])
            env = (prefix + str(err["loc"][0])).upper() if err["loc"] else prefix
            problems.append(f"{field} ({env}): {err['msg']}")
        raise ConfigError(f"invalid {cls.__name__}: " + "; ".join(problems)) from exc
