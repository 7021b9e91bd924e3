"""Settings of the processor worker (`segflow process`), environment prefix ``SEGFLOW_PROCESS_``.

Memory is bounded by configuration: every state table has a per-partition entry limit and a
per-partition byte limit (keys and values), so a worker holding P partitions keeps at most
P x (dedupe + identity limits) entries and bytes plus the drift field limit.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from runtime.settings import KafkaSettings, ObservabilitySettings, SegflowSettings

# HMAC-SHA256 keys shorter than the hash's output weaken it (RFC 2104 section 3).
MIN_PII_HMAC_KEY_BYTES = 32
# The public key docker-compose.yml and the chart's development install use: refused unless
# SEGFLOW_ALLOW_DEV_DEFAULTS is set, since anyone can recompute hashes made with it.
DEVELOPMENT_PII_HMAC_KEY = "segflow-development-only-pii-hmac-key"
_FINGERPRINT_MESSAGE = b"segflow pii key fingerprint"


def pii_key_fingerprint(key: bytes) -> str:
    """8 hex characters derived from the key (an HMAC of a fixed message, revealing nothing of
    the key): two different keys carry different version labels."""
    return hmac.new(key, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:8]


class ProcessorSettings(SegflowSettings):
    """One Faust worker: app id, state, limits, PII key, processing guarantee, alerts."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_PROCESS_")

    app_id: str = Field(
        "segflow-processors", description="Faust app id: consumer group and changelog prefix"
    )
    metrics_host: str = Field("0.0.0.0", description="Address of /metrics /healthz /readyz")
    metrics_port: int = Field(9102, ge=0, le=65535, description="Port of /metrics and health")
    state_dir: Path = Field(Path("var/processors"), description="Faust data directory")
    processing_guarantee: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once",
        description="exactly_once: Kafka transactions per partition; at_least_once: plain commits",
    )
    commit_interval_s: float = Field(
        0.25,
        gt=0,
        description="Seconds between commits (= transaction length): output is readable after "
        "its commit; shorter costs more commit requests per second (Kafka Streams uses 0.1)",
    )
    fetch_max_wait_ms: int = Field(
        1500,
        ge=0,
        le=1500,
        description="How long the broker may hold a fetch for fetch_min_bytes; matters only "
        "with fetch_min_bytes above 1",
    )
    fetch_min_bytes: int = Field(
        1,
        ge=1,
        description="Bytes a fetch waits for (at most fetch_max_wait_ms) before the broker "
        "answers. 1: as soon as any record is there. Well below a worker's capacity, 262144 with "
        "fetch_max_wait_ms 100 cut its CPU per event by ~25% (2,500 events/s) for ~0.05 s more "
        "latency; near capacity it cost ~8% more (bench/results/cost-per-event.md)",
    )
    commit_stall_s: float = Field(
        15.0,
        gt=0,
        le=30,
        description="Seconds a partition's commits may stay stuck behind records read but never "
        "acknowledged (or with records waiting and none acknowledged or fetched) before it is "
        "read again from its committed offset (logged and counted); at most 30, well inside "
        "the 60 s after which the broker aborts its open transaction",
    )
    progress_stall_s: float = Field(
        120.0,
        ge=0,
        description="Seconds a raw partition of this worker may have records waiting with no "
        "commit (outside rebalances and table recovery) before the worker stops, to be "
        "restarted (/healthz answers 503 meanwhile); more than commit_stall_s; 0: never",
    )
    session_timeout_s: float = Field(
        30.0, ge=6, description="Consumer group session timeout: how soon a dead worker is noticed"
    )
    batch_max: int = Field(2000, gt=0, description="Most events processed as one batch")
    batch_within_s: float = Field(
        0.05, gt=0, description="Seconds to wait for a batch to fill before processing it"
    )
    dedupe_lookback_s: float = Field(
        86_400.0, gt=0, description="Seconds a messageId is remembered for dedupe"
    )
    dedupe_max_entries_per_partition: int = Field(
        1_000_000, gt=0, description="messageIds remembered per partition; oldest go first"
    )
    identity_max_entries_per_partition: int = Field(
        500_000, gt=0, description="Identity links kept per partition; least recent go first"
    )
    dedupe_max_bytes_per_partition: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Bytes of messageIds remembered per partition (64 MiB); oldest go first",
    )
    identity_max_bytes_per_partition: int = Field(
        128 * 1024 * 1024,
        gt=0,
        description="Bytes of identifiers and links kept per partition (128 MiB); least recent go",
    )
    drift_max_fields: int = Field(
        100_000, gt=0, description="Known (event, field) types remembered by drift detection"
    )
    pii_hmac_key: SecretStr | None = Field(
        None,
        description="Secret key of HMAC-SHA256 hashing of PII, at least 32 bytes (required by "
        "hash rules)",
    )
    pii_key_version: str = Field(
        "v1",
        min_length=1,
        description="Version label of pii_hmac_key; events record it as LABEL-FINGERPRINT "
        "(8 hex derived from the key)",
    )
    alert_webhook_url: SecretStr | None = Field(
        None, description="Slack-compatible webhook for schema changes (overrides rules file)"
    )
    alert_min_interval_s: float | None = Field(
        None, ge=0, description="Seconds between webhook posts (overrides rules file)"
    )
    alert_timeout_s: float = Field(5.0, gt=0, description="Seconds a webhook post may take")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none",
        description="Compression of all the worker produces; zstd costs least CPU per byte saved",
    )
    honour_suppressions: bool = Field(
        True, description="Drop events of users on the suppression list, as the edge does"
    )
    suppressions_wait_s: float = Field(
        30.0, ge=0, description="Seconds to wait at start for the suppression list to load"
    )
    changelog_replication: int | None = Field(
        None, ge=1, description="Replication factor of the state changelogs; unset: the raw topics'"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    @field_validator("pii_hmac_key")
    @classmethod
    def _key_length(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().encode()) < MIN_PII_HMAC_KEY_BYTES:
            raise ValueError(
                f"the PII HMAC key must be at least {MIN_PII_HMAC_KEY_BYTES} bytes "
                "(e.g. the output of `openssl rand -hex 32`)"
            )
        return v

    @model_validator(mode="after")
    def _stalls_in_order(self) -> ProcessorSettings:
        if 0 < self.progress_stall_s <= self.commit_stall_s:
            raise ValueError(
                f"progress_stall_s ({self.progress_stall_s:g}) must be more than commit_stall_s "
                f"({self.commit_stall_s:g}), so that a partition's stuck commits are healed "
                "before the worker is stopped for making no progress (or 0: never stop)"
            )
        return self

    @model_validator(mode="after")
    def _no_public_key(self) -> ProcessorSettings:
        key = self.pii_hmac_key
        if (
            key is not None
            and key.get_secret_value() == DEVELOPMENT_PII_HMAC_KEY
            and not self.observability.allow_dev_defaults
        ):
            raise ValueError(
                "pii_hmac_key is the public development key: set SEGFLOW_PROCESS_PII_HMAC_KEY "
                "(or SEGFLOW_PROCESS_PII_HMAC_KEY_FILE) to a key of your own (or "
                "SEGFLOW_ALLOW_DEV_DEFAULTS=true, for local development only)"
            )
        return self

    @property
    def pii_key_label(self) -> str:
        """The version recorded on each hashed event: the label tied to the key it names."""
        if self.pii_hmac_key is None:
            return self.pii_key_version
        key = self.pii_hmac_key.get_secret_value().encode()
        return f"{self.pii_key_version}-{pii_key_fingerprint(key)}"
