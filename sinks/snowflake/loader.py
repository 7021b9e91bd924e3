"""SnowflakeLoader: one warehouse transaction per flush, composed of one part per job.

- connection.py (`SinkConnection`): login, the control schema, its stage and offsets table, the
  sweep of dead processes' staging tables; every statement counted and its failure classified;
- schema_sync.py (`SchemaSync`): schema evolution carried out before the transaction (DDL commits
  by itself in Snowflake, so it runs first and is safe to repeat), recorded in
  `_segflow_schema_changes`, caps alerted;
- stager.py (`Stager`, `StagedFlush`): the flush's Parquet file (prepared ahead where the
  layouts allow: the batch's `prepared`), the staging table and the PUT, outside the transaction
  as well (they only touch this process's staging table);
- views.py (`IdentityViews`): each source schema's `identified_events` view, (re)made before
  the transaction when the schema's tables change;
- transaction.py (`FlushTransaction`): BEGIN; COPY; rows, users/accounts and identity_map
  upserts, identity chains resolved; the staging table emptied; the offsets compare-and-set;
  COMMIT.

Any error rolls back and is classified (errors.classify) into retryable, misfit or fatal; a
failed compare-and-set raises FencedError after the rollback. A retryable error drops the
connection (a broken session is not reused). After a misfit (the warehouse refused some record's
data) every layout is read again before the next flush: a layout changed by someone else is one
cause the consumer's split-and-retry (misfits.py) then heals by itself.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from runtime.settings import WarehouseSettings
from schemas.errors import SegflowError
from sinks.snowflake.batcher import FlushBatch
from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.errors import FencedError, WarehouseMisfitError, WarehouseRetryableError
from sinks.snowflake.identity_chains import DEFAULT_MAX_HOPS
from sinks.snowflake.metrics import SinkMetrics, table_label
from sinks.snowflake.migrations import LayoutMigration
from sinks.snowflake.offsets import OffsetStore
from sinks.snowflake.rows import collapse, first_per_id
from sinks.snowflake.schema_sync import SchemaSync
from sinks.snowflake.session import Connect, connect_warehouse
from sinks.snowflake.stager import StagedFlush, Stager
from sinks.snowflake.transaction import FlushResult, FlushTransaction
from sinks.snowflake.views import IdentityViews

__all__ = ["FlushResult", "LoaderOptions", "SnowflakeLoader"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoaderOptions:
    group_id: str
    control_schema: str = "_segflow"
    lookback_hours: float = 72.0
    max_columns_per_table: int = 1000
    max_tables_per_schema: int = 500
    stage_dir: str | None = None
    staging_max_age_h: float = 24.0
    identity_max_hops: int = DEFAULT_MAX_HOPS


class SnowflakeLoader:
    """Owns the warehouse connection; loads flushes and keeps the offsets."""

    def __init__(
        self,
        warehouse: WarehouseSettings,
        options: LoaderOptions,
        metrics: SinkMetrics,
        connect: Connect = connect_warehouse,
    ) -> None:
        self.warehouse = warehouse
        self.metrics = metrics
        self.offsets = OffsetStore(options.control_schema, options.group_id)
        self.conn = SinkConnection(
            warehouse,
            options.control_schema,
            self.offsets,
            metrics,
            connect=connect,
            on_drop=self._forget_session,
        )
        self.schemas = SchemaSync(self.conn, metrics)
        self.layout = LayoutMigration(self.conn, self.schemas, options.control_schema)
        self.stager = Stager(
            self.conn, options.control_schema, stage_dir=Path(tempfile.gettempdir())
        )
        self.transaction = FlushTransaction(self.conn, self.stager, self.offsets, metrics)
        self.views = IdentityViews(self.conn)
        self.options = options

    @property
    def options(self) -> LoaderOptions:
        return self._options

    @options.setter
    def options(self, options: LoaderOptions) -> None:
        """The options, handed to the parts that read them."""
        self._options = options
        self.conn.staging_max_age_h = options.staging_max_age_h
        self.schemas.max_columns_per_table = options.max_columns_per_table
        self.schemas.max_tables_per_schema = options.max_tables_per_schema
        self.stager.stage_dir = Path(options.stage_dir or tempfile.gettempdir())
        self.stager.staging_max_age_h = options.staging_max_age_h
        self.transaction.lookback_hours = options.lookback_hours
        self.transaction.chains.max_hops = options.identity_max_hops

    @property
    def staging(self) -> str:
        """This process's staging table ("schema.name")."""
        return self.stager.table

    # -- connection --------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the connection and make sure the control schema, stage and offsets exist;
        the first time, bring the warehouse's schemas to the current layout (migrations.py)."""
        self.conn.open()
        self.layout.ensure()

    def close(self) -> None:
        if not self.conn.is_open:
            return
        self.stager.drop()
        self.conn.drop()

    def _forget_session(self) -> None:
        """What was known about the warehouse goes with a dropped connection."""
        self.schemas.reset()
        self.stager.reset()
        self.views.reset()

    # -- offsets -----------------------------------------------------------------------------
    def ensure_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Stored next offsets of `partitions`, creating rows (-1) for new ones."""
        try:
            self.connect()
            return self.offsets.ensure(self.conn.offsets_execute, partitions)
        except WarehouseRetryableError:
            self.conn.drop()  # autocommit statements: nothing is left open
            raise

    def read_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        try:
            self.connect()
            return self.offsets.read(self.conn.offsets_execute, partitions)
        except WarehouseRetryableError:
            self.conn.drop()
            raise

    # -- the flush ---------------------------------------------------------------------------
    def flush(self, batch: FlushBatch) -> FlushResult:
        """Load `batch` and move its offsets, all or nothing. Raises FencedError, a retryable
        or a fatal error; on any of them nothing of the batch is committed."""
        started = time.monotonic()
        self.conn.statements = 0
        try:
            self.connect()
            result = self._flush(batch)
        except FencedError:
            raise
        except SegflowError as exc:
            if isinstance(exc, WarehouseRetryableError):
                self.conn.drop()  # a broken session is not reused
            elif isinstance(exc, WarehouseMisfitError):
                self.schemas.reset()  # layouts read again: a stale one may be the cause
            raise
        result.statements = self.conn.statements
        result.seconds = time.monotonic() - started
        return result

    def prepare(self, batch: FlushBatch) -> StagedFlush | None:
        """The warehouse-free part of `batch`'s flush, done ahead in the caller's thread while
        another flush is in the warehouse: rows deduplicated, typed against the layouts known
        now, staged to a Parquet file. None (nothing done) when the batch needs the warehouse
        first: a schema whose layout is not known yet, DDL or misfits. The flush uses the result
        only if no layout changed since (its `generation`), else it starts over."""
        started = time.perf_counter()
        generation = self.schemas.generation
        rows, repeated = first_per_id(collapse(batch.rows))
        p = self.schemas.plan_ahead(rows)
        if p is None:
            return None
        prepared = self.stager.write(p, repeated, generation)
        self._phase("prepare", started)
        return prepared

    def _flush(self, batch: FlushBatch) -> FlushResult:
        started = time.perf_counter()
        prepared = batch.prepared
        batch.prepared = None  # used once: a retry starts over
        prepared_here_s = 0.0
        if isinstance(prepared, StagedFlush) and prepared.generation == self.schemas.generation:
            self.metrics.prepared_ahead.labels("used").inc()
        else:
            if prepared is not None:
                self.metrics.prepared_ahead.labels("replanned").inc()
                prepared.discard()
            prepared = self._prepare_here(batch)
            now = self._phase("prepare", started)
            prepared_here_s, started = now - started, now
        try:
            for table, n in prepared.repeated.items():
                self.metrics.rows_skipped.labels(table_label(table)).inc(n)
            if prepared.staged_rows:
                self.stager.stage(prepared)
            for schema in sorted({s for s, _ in prepared.groups}):
                self.views.ensure(schema, self.schemas.layout(schema))
            started = self._phase("stage", started)
            result = self.transaction.run(batch, prepared, datetime.now(UTC))
            self._phase("transaction", started)
            result.prepared_here_s = prepared_here_s
            return result
        finally:
            prepared.discard()

    def _prepare_here(self, batch: FlushBatch) -> StagedFlush:
        """The whole preparation, schema evolution included (it runs DDL)."""
        rows, repeated = first_per_id(collapse(batch.rows))
        p = self.schemas.plan_flush(rows)
        return self.stager.write(p, repeated, self.schemas.generation)

    def _phase(self, name: str, started: float) -> float:
        now = time.perf_counter()
        self.metrics.phase_seconds.labels(name).inc(now - started)
        return now
