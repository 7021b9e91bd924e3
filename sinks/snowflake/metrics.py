"""Prometheus metrics of the sink, built on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.naming import RESERVED_TABLES

_STANDARD_TABLES = RESERVED_TABLES | {"_segflow_schema_changes"}


def table_label(table: str) -> str:
    """Per-event tables share one label value: table names must not blow up cardinality."""
    return table if table in _STANDARD_TABLES else "per_event"


class SinkMetrics:
    """Everything the sink reports on /metrics."""

    def strict_violations_of(self, rule: str) -> None:
        """Count one statement the strict check refused (strict.OnViolation)."""
        self.strict_violations.labels(rule).inc()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "segflow_sink_records_total",
            "Kafka records consumed, by outcome (buffered, suppressed, tombstone, dlq)",
            ["topic", "outcome"],
            registry=registry,
        )
        self.rows_loaded = Counter(
            "segflow_sink_rows_loaded_total",
            "Rows written to warehouse tables (after idempotence checks)",
            ["table"],
            registry=registry,
        )
        self.rows_skipped = Counter(
            "segflow_sink_rows_skipped_total",
            "Staged rows not inserted because their id was already loaded",
            ["table"],
            registry=registry,
        )
        self.statements = Counter(
            "segflow_sink_statements_total",
            "Warehouse statements executed, by kind",
            ["kind"],
            registry=registry,
        )
        self.statement_seconds = Histogram(
            "segflow_sink_statement_duration_seconds",
            "Duration of warehouse statements, by kind",
            ["kind"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=registry,
        )
        self.phase_seconds = Counter(
            "segflow_sink_flush_phase_seconds_total",
            "Time spent in the phases of flushes (prepare: rows, evolution and the Parquet file, "
            "ahead or not; stage: the staging table and the PUT; transaction: the COPY, the "
            "statements into the targets and the offsets)",
            ["phase"],
            registry=registry,
        )
        self.prepared_ahead = Counter(
            "segflow_sink_prepared_ahead_total",
            "Flushes prepared while another was in the warehouse, by outcome (used: loaded as "
            "prepared; replanned: a layout changed meanwhile; dropped: its buffers changed; "
            "not_prepared: it needed the warehouse first)",
            ["outcome"],
            registry=registry,
        )
        self.flush_seconds = Histogram(
            "segflow_sink_flush_duration_seconds",
            "Duration of successful flushes",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=registry,
        )
        self.flush_records = Histogram(
            "segflow_sink_flush_size_records",
            "Kafka records per successful flush",
            buckets=(1, 10, 100, 1_000, 10_000, 50_000, 100_000, 250_000, 1_000_000),
            registry=registry,
        )
        self.flush_bytes = Histogram(
            "segflow_sink_flush_size_bytes",
            "Estimated buffered bytes per successful flush",
            buckets=(1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9),
            registry=registry,
        )
        self.flush_statements = Histogram(
            "segflow_sink_flush_statements",
            "Warehouse statements per successful flush",
            buckets=(5, 10, 20, 50, 100, 200, 500),
            registry=registry,
        )
        self.flushes = Counter(
            "segflow_sink_flushes_total",
            "Flush attempts by outcome (committed, retried, fenced, failed)",
            ["outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "segflow_sink_retries_total",
            "Retries after retryable warehouse errors",
            registry=registry,
        )
        self.rollbacks = Counter(
            "segflow_sink_rollbacks_total", "Flush transactions rolled back", registry=registry
        )
        self.fenced = Counter(
            "segflow_sink_fenced_flushes_total",
            "Flushes dropped because another instance moved the offsets",
            registry=registry,
        )
        self.schema_changes = Counter(
            "segflow_sink_schema_changes_total",
            "Columns added or widened, and values moved to _unmapped",
            ["change"],
            registry=registry,
        )
        self.widenings = Counter(
            "segflow_sink_columns_widened_total",
            "Columns this sink widened up the type ladder, by type before and after",
            ["from_type", "to_type"],
            registry=registry,
        )
        self.misfits = Counter(
            "segflow_sink_misfit_records_total",
            "Records the warehouse refused for their data (or that cannot fit it), sent to the "
            "DLQ while the rest of their flush loaded; by reason",
            ["reason"],
            registry=registry,
        )
        self.misfit_flushes = Counter(
            "segflow_sink_misfit_flushes_total",
            "Flushes split to set apart the records the warehouse refused for their data",
            registry=registry,
        )
        self.caps_hit = Counter(
            "segflow_sink_caps_hit_total",
            "Times a table or schema first reached its cap (columns per table, tables per "
            "schema): an alert; the values go to _unmapped",
            ["cap"],
            registry=registry,
        )
        self.strict_violations = Counter(
            "segflow_sink_strict_violations_total",
            "Statements refused by the strict check because Snowflake would refuse them (on "
            "with the emulator; any is a bug or a misfit the pre-flight missed)",
            ["rule"],
            registry=registry,
        )
        self.lag = Gauge(
            "segflow_sink_consumer_lag_records",
            "Records between the partition's high watermark and the sink's position",
            ["topic", "partition"],
            registry=registry,
        )
        self.buffered_bytes = Gauge(
            "segflow_sink_buffered_bytes",
            "Estimated bytes held in partition buffers",
            registry=registry,
        )
        self.buffered_records = Gauge(
            "segflow_sink_buffered_records",
            "Records held in partition buffers",
            registry=registry,
        )
