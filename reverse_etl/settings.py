"""Settings of reverse ETL (`segflow reverse-etl`), environment prefix ``SEGFLOW_REVERSE_ETL_``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from runtime.settings import (
    KafkaSettings,
    ObservabilitySettings,
    SegflowSettings,
    WarehouseSettings,
)
from schemas.segment import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BYTES


class ReverseEtlSettings(SegflowSettings):
    """One sync: a warehouse query whose rows become identify, track or group calls."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_REVERSE_ETL_")

    sync_name: str = Field(
        "default", min_length=1, max_length=200, description="Name of the sync (its state key)"
    )
    query: str | None = Field(None, description="SQL whose rows are sent (or query_file)")
    query_file: Path | None = Field(None, description="File holding the SQL to run")
    call: Literal["identify", "track", "group"] = Field(
        "identify", description="Call each row becomes"
    )
    user_id_column: str = Field("user_id", description="Column holding the userId")
    anonymous_id_column: str = Field(
        "anonymous_id", description="Column holding the anonymousId, used when present"
    )
    key_column: str | None = Field(
        None, description="Column identifying a row across syncs; default: the userId column"
    )
    event: str | None = Field(None, description="track: the event name of every row")
    event_column: str = Field("event", description="track: column holding the event name")
    group_id_column: str = Field("group_id", description="group: column holding the groupId")
    timestamp_column: str | None = Field(
        None, description="Column holding the call's timestamp; default: the time of the sync"
    )
    api_host: str = Field(
        "https://api.segment.io", description="Segment-compatible API base URL (our edge works)"
    )
    write_key: SecretStr | None = Field(None, description="Write key of the receiving source")
    integrations_json: str = Field(
        '{"Segflow": false}',
        description="Segment integrations object put on every call (JSON)",
    )
    gzip: bool = Field(True, description="Gzip request bodies")
    max_batch_events: int = Field(
        MAX_BATCH_EVENTS, gt=0, le=MAX_BATCH_EVENTS, description="Most events in one request"
    )
    max_batch_bytes: int = Field(
        MAX_BATCH_BYTES, gt=1024, le=MAX_BATCH_BYTES, description="Largest request body (bytes)"
    )
    max_event_bytes: int = Field(
        MAX_EVENT_BYTES, gt=0, le=MAX_EVENT_BYTES, description="Largest event; larger rows skipped"
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Seconds one HTTP request may take")
    retry_initial_s: float = Field(0.5, gt=0, description="First back-off after a 429/5xx")
    retry_max_s: float = Field(60.0, gt=0, description="Longest back-off between retries")
    retry_max_attempts: int = Field(
        8, ge=0, description="Retries of one request before the sync fails"
    )
    interval_s: float = Field(
        0.0, ge=0, description="Seconds between syncs; 0 = run once and exit (CronJob)"
    )
    state_schema: str = Field(
        "_segflow", description="Schema of the _segflow_reverse_etl_state table"
    )
    fetch_rows: int = Field(10_000, gt=0, description="Rows fetched from the warehouse at a time")
    metrics_host: str = Field("0.0.0.0", description="Address of /metrics in interval mode")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Port of /metrics, /healthz in interval mode; 0 = off"
    )

    honour_suppressions: bool = Field(
        True, description="Read segment.suppressions and never send a suppressed user's row"
    )
    suppressions_wait_s: float = Field(
        30.0, gt=0, description="Seconds to wait at start for the suppression list to load"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    @model_validator(mode="after")
    def _consistent(self) -> ReverseEtlSettings:
        if (self.query is None) == (self.query_file is None):
            raise ValueError("give exactly one of query and query_file")
        return self

    def sql(self) -> str:
        if self.query is not None:
            return self.query
        assert self.query_file is not None
        return self.query_file.read_text(encoding="utf-8")

    @property
    def row_key_column(self) -> str:
        if self.key_column:
            return self.key_column
        return self.group_id_column if self.call == "group" else self.user_id_column
