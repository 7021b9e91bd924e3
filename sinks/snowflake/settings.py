"""Settings of the Snowflake sink (`segflow sink`), environment prefix ``SEGFLOW_SINK_``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.settings import (
    KafkaSettings,
    ObservabilitySettings,
    SegflowSettings,
    WarehouseSettings,
)
from schemas.naming import RESERVED_TABLES
from schemas.snowflake_limits import MAX_COLUMNS_PER_TABLE


class SinkSettings(SegflowSettings):
    """The sink: consumer group, flush triggers, idempotence window, retries and memory bounds."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_SINK_")

    group_id: str = Field("segflow-sink", description="Kafka consumer group of the sink instances")
    flush_rows: int = Field(
        50_000, gt=0, description="Flush when one partition has buffered this many records"
    )
    flush_bytes: int = Field(
        32 * 1024 * 1024, gt=0, description="Flush when one partition has buffered this many bytes"
    )
    flush_age_s: float = Field(
        0.5,
        gt=0,
        description="Flush when a partition's oldest record was produced this long ago (its "
        "Kafka timestamp); flushes also wait for the one in flight, so under load they are larger",
    )
    max_buffered_bytes: int = Field(
        256 * 1024 * 1024,
        gt=0,
        description="Memory bound of all buffers and the flush in flight; a flush starts at half",
    )
    fetch_queue_kbytes: int = Field(
        32_768, gt=0, description="librdkafka pre-fetch queue (queued.max.messages.kbytes)"
    )
    session_timeout_ms: int = Field(
        45_000,
        ge=1_000,
        description="Kafka session timeout: how soon a dead instance's partitions move",
    )
    instance_id: str | None = Field(
        None,
        description="Static membership id (group.instance.id): a restart keeps its partitions",
    )
    assignment_strategy: Literal["roundrobin", "cooperative-sticky"] = Field(
        "roundrobin",
        description="roundrobin (eager) splits every topic evenly over the instances; "
        "cooperative-sticky moves fewer partitions but evens only their count",
    )
    consume_batch: int = Field(5_000, gt=0, description="Records taken per consume() call")
    lookback_hours: float = Field(
        72.0,
        ge=0,
        description="A row whose id is already loaded within this window is not loaded again",
    )
    audit_default: bool = Field(
        True, description="Keep the audit archive for sources the rules file does not name"
    )
    control_schema: str = Field(
        "_segflow", description="Schema of the offsets table and the staging area"
    )
    max_columns_per_table: int = Field(
        MAX_COLUMNS_PER_TABLE,
        gt=10,
        le=MAX_COLUMNS_PER_TABLE,
        description="New properties beyond this many columns go to _unmapped",
    )
    max_tables_per_schema: int = Field(
        500,
        gt=len(RESERVED_TABLES) + 1,
        description="Track events beyond this many tables in a schema go to tracks._unmapped",
    )
    retry_initial_s: float = Field(0.5, gt=0, description="First back-off after a retryable error")
    retry_max_s: float = Field(30.0, gt=0, description="Longest back-off between retries")
    retry_max_attempts: int = Field(
        0, ge=0, description="Give up (exit non-zero) after this many retries of a flush; 0 = never"
    )
    metrics_host: str = Field("0.0.0.0", description="Address of /metrics, /healthz, /readyz")
    metrics_port: int = Field(9103, ge=0, le=65535, description="Metrics server port; 0 = any")
    lag_interval_s: float = Field(5.0, gt=0, description="Seconds between consumer lag updates")
    stage_dir: str | None = Field(
        None, description="Directory for the Parquet files of flushes; default: system temp"
    )
    identity_max_hops: int = Field(
        16,
        ge=1,
        le=100,
        description="Links an identity chain is followed per flush to re-point identity_map rows",
    )
    honour_suppressions: bool = Field(
        True, description="Read segment.suppressions and drop suppressed users' rows"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
