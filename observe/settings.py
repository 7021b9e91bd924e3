"""Settings of the read-only views (`segflow status`, `segflow tail`), prefix ``SEGFLOW_STATUS_``.

The component addresses and consumer groups default to what `segflow up` runs (the edge on
8088, the processors' health on 9102, the sink's on 9103, the groups ``segflow-processors`` and
``segflow-sink``); `segflow status` takes the groups and ports from the components' own settings
(``SEGFLOW_PROCESS_APP_ID``, ``SEGFLOW_SINK_GROUP_ID``, ...) when these are not set here.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.settings import KafkaSettings, SegflowSettings, WarehouseSettings


class StatusSettings(SegflowSettings):
    """What `segflow status` checks, where, how long it waits and what it calls unhealthy."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_STATUS_")

    edge_url: str = Field(
        "http://127.0.0.1:8088", description="Base URL of the edge's /healthz and /readyz"
    )
    processors_url: str = Field(
        "http://127.0.0.1:9102", description="Base URL of the processors' /healthz and /readyz"
    )
    sink_url: str = Field(
        "http://127.0.0.1:9103", description="Base URL of the sink's /healthz and /readyz"
    )
    processors_group: str = Field(
        "segflow-processors", description="Consumer group of the processors (their app id)"
    )
    sink_group: str = Field("segflow-sink", description="Consumer group of the Snowflake sink")
    control_schema: str = Field(
        "_segflow", description="Warehouse schema of the sink's offsets and staging area"
    )
    timeout_s: float = Field(
        5.0, gt=0, le=120, description="Seconds the whole check may take; what is late is unknown"
    )
    max_lag: int = Field(
        10_000, ge=0, description="Unhealthy when a group lags more records than this on a topic"
    )
    dlq_window_s: float = Field(
        3600.0,
        ge=0,
        description="Unhealthy when the DLQ received a record this recently (seconds); "
        "0: any record in the DLQ",
    )
    dlq_reasons: int = Field(
        5, ge=0, le=100, description="Newest DLQ reasons shown (read from each partition's end)"
    )
    max_freshness_s: float | None = Field(
        None,
        gt=0,
        description="Unhealthy when a table's newest load is older than this (seconds); "
        "unset: not judged (a quiet source is not a fault)",
    )
    warehouse_check: bool = Field(
        True,
        description="Read each table's last load and the recent schema changes from the warehouse",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
