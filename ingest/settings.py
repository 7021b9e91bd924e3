"""Settings of the ingest edge (`segflow ingest`), environment prefix ``SEGFLOW_INGEST_``."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from ingest.browser_settings import ApiBase, parse_public_url
from ingest.client_ip import TrustedProxies, parse_networks
from runtime.settings import KafkaSettings, ObservabilitySettings, SegflowSettings
from schemas.segment import (
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_CONTEXT_COPY_BYTES,
    MAX_EVENT_BYTES,
    MAX_IDENTIFIER_LENGTH,
    MAX_KEY_LENGTH,
    MAX_KEYS_PER_EVENT,
    MAX_KEYS_PER_OBJECT,
    MAX_NAME_LENGTH,
    MAX_NESTING_DEPTH,
    MAX_NESTING_DEPTH_CEILING,
    EventLimits,
)


class EventLimitsSettings(SegflowSettings):
    """Limits on each event, shared by the edge and backfill (both read SEGFLOW_INGEST_*)."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_INGEST_")

    max_nesting_depth: int = Field(
        MAX_NESTING_DEPTH,
        ge=2,
        le=MAX_NESTING_DEPTH_CEILING,
        description="Deepest nesting of objects/arrays in an event, the event itself level 1",
    )
    max_identifier_length: int = Field(
        MAX_IDENTIFIER_LENGTH,
        gt=0,
        description="Longest userId, anonymousId, groupId, previousId, messageId (characters)",
    )
    max_name_length: int = Field(
        MAX_NAME_LENGTH,
        gt=0,
        description="Longest track event, page/screen name or category (characters)",
    )
    max_key_length: int = Field(
        MAX_KEY_LENGTH, gt=0, description="Longest key of any object in an event (characters)"
    )
    max_keys_per_object: int = Field(
        MAX_KEYS_PER_OBJECT, gt=0, description="Most keys in one object of an event"
    )
    max_keys_per_event: int = Field(
        MAX_KEYS_PER_EVENT, gt=0, description="Most keys in all objects of one event together"
    )
    max_context_copy_bytes: int = Field(
        MAX_CONTEXT_COPY_BYTES,
        ge=0,
        description="Most bytes a batch's context+integrations may add, copied into each event",
    )

    def event_limits(self) -> EventLimits:
        """The limits as the validation functions take them."""
        return EventLimits(
            max_nesting_depth=self.max_nesting_depth,
            max_identifier_length=self.max_identifier_length,
            max_name_length=self.max_name_length,
            max_key_length=self.max_key_length,
            max_keys_per_object=self.max_keys_per_object,
            max_keys_per_event=self.max_keys_per_event,
            max_context_copy_bytes=self.max_context_copy_bytes,
        )


class IngestSettings(SegflowSettings):
    """The Segment-compatible HTTP edge: server, limits, producer and rate limits."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_INGEST_")

    host: str = Field("0.0.0.0", description="Address the HTTP server binds to")
    port: int = Field(
        8088,
        ge=0,
        le=65535,
        description="Port of the Tracking API (/metrics too, unless admin_port)",
    )
    admin_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of /metrics, /healthz, /readyz apart from the API; set: the API port "
        "serves no /metrics",
    )
    admin_host: str = Field("0.0.0.0", description="Address the admin_port server binds to")
    max_event_bytes: int = Field(
        MAX_EVENT_BYTES, gt=0, description="Largest single event (JSON bytes), Segment: 32 KB"
    )
    max_batch_bytes: int = Field(
        MAX_BATCH_BYTES,
        gt=0,
        description="Largest batch request body (JSON bytes), Segment: 500 KB",
    )
    max_batch_events: int = Field(
        MAX_BATCH_EVENTS, gt=0, le=MAX_BATCH_EVENTS, description="Most events in one batch request"
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a client has to send its whole request body (else 408)"
    )
    produce_timeout_s: float = Field(
        10.0, gt=0, description="Seconds to wait for Kafka to acknowledge a request (else 503)"
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After seconds sent with a 503")
    queue_max_messages: int = Field(
        200_000, gt=0, description="Events the producer may hold unacknowledged (more: 503)"
    )
    queue_max_kbytes: int = Field(
        262_144, gt=0, description="Kilobytes the producer may hold unacknowledged"
    )
    linger_ms: float = Field(5.0, ge=0, description="Producer linger.ms: wait to fill batches")
    batch_bytes: int = Field(1_000_000, gt=0, description="Producer batch.size in bytes")
    compression: str = Field("lz4", description="Producer compression.type (lz4, zstd, none...)")
    default_rate_limit_per_s: float | None = Field(
        None,
        gt=0,
        description="Events/s of sources without rate_limit_per_s in the rules; unset = off",
    )
    rate_limit_burst_s: float = Field(
        1.0, gt=0, description="Seconds of a source's rate it may send at once (bucket size)"
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Shared secret of Segment's Webhooks destination (X-Signature HMAC-SHA1)"
    )
    webhook_source: str | None = Field(
        None, description="Source of webhook events that carry no write key; unset = key required"
    )
    cors_origins: str = Field(
        "*", description="Allowed browser origins, comma-separated, * for any (analytics.js)"
    )
    cors_allow_headers: str = Field(
        "Content-Type, Authorization, Content-Encoding, X-Request-Id",
        description="Request headers a browser may send (CORS preflight), comma-separated",
    )
    cors_max_age_s: int = Field(
        86_400, ge=0, description="Seconds a browser may cache a CORS preflight answer"
    )
    keep_alive_s: int = Field(
        75, gt=0, description="Idle seconds before a keep-alive connection closes"
    )
    limit_concurrency: int | None = Field(
        None, gt=0, description="Most connections/requests at once before 503; unset = no limit"
    )
    suppressions_wait_s: float = Field(
        30.0, ge=0, description="Seconds to wait at start for the suppression list to load"
    )
    check_topics: bool = Field(True, description="Refuse to start when the raw topics are missing")
    fill_context_ip: bool = Field(
        True, description="Set context.ip to the client's address on events that carry none"
    )
    trusted_proxies: str = Field(
        "",
        description="CIDRs of proxies whose X-Forwarded-For is believed, comma-separated; "
        "empty = none (the socket peer is the client)",
    )
    settings_max_age_s: int = Field(
        300, ge=0, description="Seconds browsers and caches may keep the analytics.js settings"
    )
    public_url: str | None = Field(
        None,
        description="The edge's URL as browsers reach it (https://host[:port][/prefix]), for "
        "the analytics.js settings; unset = the request's Host",
    )

    limits: EventLimitsSettings = Field(default_factory=EventLimitsSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_public_url(value)
            return value
        return None

    def proxies(self) -> TrustedProxies:
        """The trusted proxies as the edge checks them."""
        return TrustedProxies(parse_networks(self.trusted_proxies))

    def public_base(self) -> ApiBase | None:
        """Where browsers send events, from public_url; None when unset."""
        return parse_public_url(self.public_url) if self.public_url else None

    def origins(self) -> frozenset[str]:
        """The allowed CORS origins as a set ("*" means any)."""
        return frozenset(o.strip() for o in self.cors_origins.split(",") if o.strip())
