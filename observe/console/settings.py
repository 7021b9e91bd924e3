"""Settings of the web console (`segflow console`), prefix ``SEGFLOW_CONSOLE_``.

The console binds to 127.0.0.1 unless told otherwise; bound to any other address it refuses to
start without a token (`check_exposure`). Where it reads from (Kafka, the components' URLs, the
warehouse) comes from the status settings (``SEGFLOW_STATUS_*``), shared with `segflow status`.
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from runtime.settings import SegflowSettings
from schemas.errors import ConfigError

# The smallest token accepted: a guessable token on an exposed console is no token.
MIN_TOKEN_CHARS = 16


class ConsoleSettings(SegflowSettings):
    """The console's server, its token, its buffers and how often it refreshes each view."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_CONSOLE_")

    host: str = Field(
        "127.0.0.1", description="Address to bind; any non-loopback address needs a token"
    )
    port: int = Field(8095, ge=0, le=65535, description="Port of the console (0: any free port)")
    token: SecretStr | None = Field(
        None,
        description="Bearer token (at least 16 characters) required by every page and API call; "
        "mandatory when host is not a loopback address",
    )
    events: int = Field(
        500, ge=10, le=10_000, description="Live events kept in memory (the newest N)"
    )
    dlq_entries: int = Field(
        500, ge=10, le=10_000, description="DLQ entries kept in memory (the newest N)"
    )
    backlog: int = Field(
        20, ge=0, le=1000, description="Events read back per clean-topic partition at start"
    )
    update_interval_s: float = Field(
        0.5,
        ge=0.1,
        le=10,
        description="Seconds between two live-view updates sent to one browser (coalesced)",
    )
    scrape_interval_s: float = Field(
        5.0, ge=1, le=300, description="Seconds between two scrapes of the components' /metrics"
    )
    status_interval_s: float = Field(
        15.0, ge=2, le=3600, description="Seconds between two reads of lag, freshness and health"
    )
    schema_interval_s: float = Field(
        60.0, ge=5, le=3600, description="Seconds between two reads of the schema-change review"
    )
    replay_margin_s: float = Field(
        600.0,
        ge=0,
        le=7 * 86400,
        description="Seconds before the first DLQ entry that the suggested replay range starts "
        "(a record reaches the DLQ after it was written)",
    )
    edge_public_url: str | None = Field(
        None,
        description="The edge's URL as SDKs reach it, for the setup snippets; unset: the status "
        "settings' edge_url",
    )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: ConsoleSettings) -> None:
    """Refuse to serve a console reachable from other machines without a (long enough) token."""
    token = settings.token.get_secret_value() if settings.token is not None else ""
    if not token and not is_loopback(settings.host):
        raise ConfigError(
            f"SEGFLOW_CONSOLE_TOKEN is required when the console binds to {settings.host!r} "
            "(not a loopback address): set SEGFLOW_CONSOLE_TOKEN or SEGFLOW_CONSOLE_TOKEN_FILE, "
            "or bind to 127.0.0.1"
        )
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"SEGFLOW_CONSOLE_TOKEN is shorter than {MIN_TOKEN_CHARS} characters: use a random "
            "one (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
