"""SnowflakeLoader: one warehouse transaction per flush.

A flush runs, in order:
 1. schema evolution (DDL commits by itself in Snowflake, so it runs before the transaction and
    is safe to repeat): new schemas and tables, added and widened columns, recorded in
    `_segflow_schema_changes`;
 2. staging, outside the transaction as well (it only touches this process's staging table):
    one Parquet file (an event is staged once, its row flagged to feed tracks and audit_log too:
    staging.stage_units), PUT to the control schema's stage, the staging table re-created empty;
 3. BEGIN; COPY INTO the staging table; set-based statements from it into every target
    (insert-where-not-exists for events and the audit log, merge-by-delete-insert for
    users/accounts/identity_map, plain insert for misfit records); the staging table emptied;
    the offsets compare-and-set; COMMIT.
Any error rolls back and is classified (errors.classify) into retryable, misfit or fatal; a
failed compare-and-set raises FencedError after the rollback. After a misfit (the warehouse
refused some record's data) every layout is read again before the next flush: a layout changed
by someone else is one cause the consumer's split-and-retry (misfits.py) then heals by itself.

Caps (evolution.py): columns per table and tables per schema; the first time a table or schema
reaches its cap in this process, a warning is logged and `segflow_sink_caps_hit_total{cap}`
counts it (the alert); every flush it affects records a ``column_limit`` / ``table_limit`` row in
`_segflow_schema_changes`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runtime.settings import WarehouseSettings
from schemas.errors import SegflowError
from sinks.snowflake import ddl, dml
from sinks.snowflake.batcher import FlushBatch
from sinks.snowflake.errors import (
    FencedError,
    WarehouseMisfitError,
    WarehouseRetryableError,
    classify,
)
from sinks.snowflake.evolution import (
    Plan,
    SchemaChange,
    column_type_from_warehouse,
    fold_capped_tables,
    plan,
)
from sinks.snowflake.metrics import SinkMetrics, table_label
from sinks.snowflake.offsets import OffsetStore
from sinks.snowflake.rows import TableRow, collapse, first_per_id
from sinks.snowflake.session import Connect, connect_warehouse, login
from sinks.snowflake.staging import (
    AUDIT_FLAG,
    AUDIT_RENAMES,
    TRACKS,
    TRACKS_FLAG,
    TRACKS_RENAMES,
    group_rows,
    stage_units,
    unit_stage_types,
    write_units,
)
from sinks.snowflake.tables import (
    AUDIT_LOG,
    DETECTED_BY_SINK,
    SCHEMA_CHANGES,
    Kind,
    fixed_columns,
    lookback_column,
)

logger = logging.getLogger(__name__)

STAGE = "_segflow_stage"
STAGING_PREFIX = "_segflow_staging_"
Columns = dict[str, str]


@dataclass(frozen=True)
class LoaderOptions:
    group_id: str
    control_schema: str = "_segflow"
    lookback_hours: float = 72.0
    max_columns_per_table: int = 1000
    max_tables_per_schema: int = 500
    stage_dir: str | None = None
    staging_max_age_h: float = 24.0


@dataclass
class Prepared:
    """A flush's work before the warehouse: the plan, its rows by table and the staged file."""

    generation: int
    plan: Plan
    groups: dict[tuple[str, str], list[TableRow]]
    staged: Columns
    load_id: str
    path: Path
    staged_rows: int
    repeated: dict[str, int]

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@dataclass
class FlushResult:
    records: int
    rows_loaded: dict[str, int] = field(default_factory=dict)
    statements: int = 0
    seconds: float = 0.0


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
        self.options = options
        self.metrics = metrics
        self._connect_fn = connect
        self._conn: Any = None
        self._layouts: dict[str, dict[str, Columns]] = {}
        self._generation = 0  # moves whenever a layout may have changed
        self._staging_columns: Columns | None = None  # the staging table's, when known
        self._changes_ready: set[str] = set()  # schemas whose _segflow_schema_changes is current
        self._caps_hit: set[tuple[str, str, str]] = set()  # (change, schema, table) alerted
        self.staging = _staging_name(options.control_schema)
        self._staging_since = time.monotonic()
        self.offsets = OffsetStore(options.control_schema, options.group_id)
        self._stage_dir = Path(options.stage_dir or tempfile.gettempdir())
        self._statements = 0

    # -- connection --------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the connection and make sure the control schema, stage and offsets exist."""
        if self._conn is not None:
            return
        self._conn, database = login(
            self.warehouse, "sink", self._connect_fn, self.metrics.strict_violations_of
        )
        try:
            self._run(f"CREATE DATABASE IF NOT EXISTS {ddl.quote(database)}", kind="ddl")
            self._run(f"USE DATABASE {ddl.quote(database)}", kind="session")
            self._run(ddl.create_schema(self.options.control_schema), kind="ddl")
            self._run(f"USE SCHEMA {ddl.quote(self.options.control_schema)}", kind="session")
            self._run(ddl.create_stage(self.options.control_schema, STAGE), kind="ddl")
            self._run(self.offsets.create_sql(), kind="ddl", table="_segflow_offsets")
            self._sweep_staging()
        except SegflowError:
            self._drop_connection()
            raise

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            self._run(f"DROP TABLE IF EXISTS {ddl.table_ref(self.staging)}", kind="ddl")
        except SegflowError as exc:
            logger.warning("could not drop staging table %s: %s", self.staging, exc)
        self._drop_connection()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._generation += 1
        self._staging_columns = None
        self._layouts.clear()
        self._changes_ready.clear()
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing left to do
                logger.debug("closing the warehouse connection failed", exc_info=True)

    def _run(
        self, sql: str, binds: Sequence[Any] = (), *, kind: str, table: str | None = None
    ) -> Any:
        """Execute one statement; count it; wrap any failure."""
        if self._conn is None:
            raise WarehouseRetryableError(f"no warehouse connection for {kind}")
        self._statements += 1
        self.metrics.statements.labels(kind).inc()
        started = time.perf_counter()
        try:
            cur = self._conn.cursor()
            cur.execute(sql, list(binds) if binds else None)
        except Exception as exc:
            raise classify(exc, statement=kind, table=table) from exc
        seconds = time.perf_counter() - started
        self.metrics.statement_seconds.labels(kind).observe(seconds)
        logger.debug("%s %s: %.3f s", kind, table or "", seconds)
        return cur

    def _sweep_staging(self) -> None:
        """Drop staging tables of processes that died more than `staging_max_age_h` ago (a
        live one renews its table's name every quarter of that age)."""
        # the prefix is matched here: LIKE needs an escape for "_", which the emulator refuses
        cur = self._run(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
            [self.options.control_schema.upper()],
            kind="select",
        )
        limit = datetime.now(UTC) - timedelta(hours=self.options.staging_max_age_h)
        for (name,) in cur.fetchall():
            if not str(name).upper().startswith(STAGING_PREFIX.upper()):
                continue
            stamp = str(name)[len(STAGING_PREFIX) :].split("_", 1)[0]
            try:
                made = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
            except ValueError:
                continue
            if made < limit:
                table = ddl.qualified(self.options.control_schema, str(name))
                self._run(f"DROP TABLE IF EXISTS {table}", kind="ddl")

    # -- offsets -----------------------------------------------------------------------------
    def ensure_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Stored next offsets of `partitions`, creating rows (-1) for new ones."""
        try:
            self.connect()
            return self.offsets.ensure(self._exec_fn("offsets"), partitions)
        except WarehouseRetryableError:
            self._drop_connection()  # autocommit statements: nothing is left open
            raise

    def read_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        try:
            self.connect()
            return self.offsets.read(self._exec_fn("offsets"), partitions)
        except WarehouseRetryableError:
            self._drop_connection()
            raise

    def _exec_fn(self, kind: str) -> Callable[[str, Sequence[Any]], Any]:
        def execute(sql: str, binds: Sequence[Any]) -> Any:
            return self._run(sql, binds, kind=kind, table="_segflow_offsets")

        return execute

    # -- layouts -----------------------------------------------------------------------------
    def _layout(self, schema: str) -> dict[str, Columns] | None:
        """Tables and columns of a schema (None if the schema has none of our tables)."""
        if schema in self._layouts:
            return self._layouts[schema]
        cur = self._run(ddl.columns_query(), [schema.upper()], kind="select")
        tables: dict[str, Columns] = {}
        for table, column, data_type, scale in cur.fetchall():
            cols = tables.setdefault(str(table).lower(), {})
            cols[str(column).lower()] = column_type_from_warehouse(str(data_type), scale)
        self._repair_widenings(schema, tables)
        if not tables:
            return None
        self._layouts[schema] = tables
        return tables

    def _repair_widenings(self, schema: str, tables: dict[str, Columns]) -> None:
        """Finish a widening an earlier process left half done."""
        for table, cols in tables.items():
            for name in [c for c in cols if c.endswith(ddl.WIDEN_SUFFIX)]:
                column = ddl.widened_column(name, cols)
                if column is None:  # a cut twin whose column is gone: its name is unknown
                    msg = "%s.%s: widening twin %s of an unknown column left; rename it by hand"
                    logger.error(msg, schema, table, name)
                    continue
                steps = ddl.widen_steps(schema, table, column)
                for sql in steps if column in cols else steps[-1:]:
                    self._run(sql, kind="ddl", table=table)
                cols.pop(name)
                cols[column] = "FLOAT"
                logger.warning("finished widening %s.%s.%s to FLOAT", schema, table, column)

    def _forget(self, schema: str) -> None:
        """Read a schema's layout again next time (it changed)."""
        self._generation += 1
        self._layouts.pop(schema, None)

    def _known(self, rows: Sequence[TableRow]) -> dict[tuple[str, str], Mapping[str, str]]:
        known: dict[tuple[str, str], Mapping[str, str]] = {}
        for schema in {r.schema for r in rows}:
            for table, cols in (self._layout(schema) or {}).items():
                known[(schema, table)] = cols
        return known

    def _apply(self, p: Plan) -> None:
        """Run the plan's DDL and record it; then forget the layouts it touched."""
        touched = {s for s, _ in p.create_tables} | {s for s, _ in p.add_columns}
        touched |= {s for s, _ in p.widen_columns}
        for schema in {s for s, _ in p.create_tables}:
            if self._layouts.get(schema) is None:
                self._run(ddl.create_schema(schema), kind="ddl")
        for (schema, table), cols in p.create_tables.items():
            self._run(ddl.create_table(schema, table, cols), kind="ddl", table=table)
        for (schema, table), cols in p.add_columns.items():
            for name, typ in cols.items():
                self._run(ddl.add_column(schema, table, name, typ), kind="ddl", table=table)
        for (schema, table), names in p.widen_columns.items():
            for name in sorted(names):
                for sql in ddl.widen_steps(schema, table, name):
                    self._run(sql, kind="ddl", table=table)
        changes = p.ddl_changes()
        self._record_changes(changes)
        for change in changes:
            self.metrics.schema_changes.labels(change.change).inc()
            logger.info(
                "schema change: %s.%s column %s %s (%s)",
                change.schema,
                change.table,
                change.column,
                change.change,
                change.column_type,
            )
        for schema in touched:
            self._forget(schema)

    def _ensure_changes_table(self, schema: str) -> None:
        """`_segflow_schema_changes` of a schema exists with every column it has now (a table
        made by an older version gets the new ones)."""
        if schema in self._changes_ready:
            return
        layout = self._layouts.get(schema)
        if layout is None:
            layout = self._layout(schema) or {}
        have = layout.get(SCHEMA_CHANGES)
        fixed = fixed_columns(SCHEMA_CHANGES)
        if have is None:
            self._run(ddl.create_schema(schema), kind="ddl")
            self._run(
                ddl.create_table(schema, SCHEMA_CHANGES, fixed), kind="ddl", table=SCHEMA_CHANGES
            )
            self._forget(schema)
        else:
            missing = {n: t for n, t in fixed.items() if n not in have}
            for name, typ in missing.items():
                self._run(
                    ddl.add_column(schema, SCHEMA_CHANGES, name, typ),
                    kind="ddl",
                    table=SCHEMA_CHANGES,
                )
            if missing:
                self._forget(schema)
        self._changes_ready.add(schema)

    def _record_changes(self, changes: Sequence[SchemaChange]) -> None:
        """Columns the sink added or widened, recorded right away (DDL is not transactional)."""
        now = datetime.now(UTC).isoformat()
        by_schema: dict[str, list[SchemaChange]] = {}
        for c in changes:
            by_schema.setdefault(c.schema, []).append(c)
        for schema, items in by_schema.items():
            self._ensure_changes_table(schema)
            binds: list[Any] = []
            for c in items:
                binds += [
                    now,
                    c.table,
                    c.column,
                    c.change,
                    c.column_type,
                    c.value_type,
                    c.occurrences,
                    c.example_message_id,
                    uuid.uuid4().hex,
                    DETECTED_BY_SINK,
                ]
            one = "(" + ", ".join(["?"] * 10) + ")"
            self._run(
                f'INSERT INTO {ddl.qualified(schema, SCHEMA_CHANGES)} ("DETECTED_AT", '
                '"TABLE_NAME", "COLUMN_NAME", "CHANGE", "COLUMN_TYPE", "VALUE_TYPE", '
                '"OCCURRENCES", "EXAMPLE_MESSAGE_ID", "ID", "DETECTED_BY") '
                "SELECT column1::TIMESTAMP_TZ, column2, column3, column4, column5, column6, "
                "column7, column8, column9, column10 FROM VALUES " + ", ".join([one] * len(items)),
                binds,
                kind="insert",
                table=SCHEMA_CHANGES,
            )

    def _plan(
        self, rows: list[TableRow], known: Mapping[tuple[str, str], Mapping[str, str]]
    ) -> Plan:
        """evolution.plan within the caps: rows of tables a schema has no room for folded."""
        rows, capped = fold_capped_tables(rows, known, self.options.max_tables_per_schema)
        p = plan(rows, known, self.options.max_columns_per_table)
        p.misfits.extend(capped)
        return p

    def _evolve(self, rows: list[TableRow]) -> Plan:
        for _ in range(3):
            p = self._plan(rows, self._known(rows))
            if not p.has_ddl:
                return p
            self._apply(p)
        return self._plan(rows, self._known(rows))

    # -- the flush ---------------------------------------------------------------------------
    def flush(self, batch: FlushBatch) -> FlushResult:
        """Load `batch` and move its offsets, all or nothing. Raises FencedError, a retryable
        or a fatal error; on any of them nothing of the batch is committed."""
        started = time.monotonic()
        self._statements = 0
        try:
            self.connect()
            result = self._flush(batch)
        except FencedError:
            raise
        except SegflowError as exc:
            if isinstance(exc, WarehouseRetryableError):
                self._drop_connection()  # a broken session is not reused
            elif isinstance(exc, WarehouseMisfitError):
                self._generation += 1  # layouts read again: a stale one may be the cause
                self._layouts.clear()
                self._changes_ready.clear()
            raise
        result.statements = self._statements
        result.seconds = time.monotonic() - started
        return result

    def prepare(self, batch: FlushBatch) -> Prepared | None:
        """The warehouse-free part of `batch`'s flush, done ahead in the caller's thread while
        another flush is in the warehouse: rows deduplicated, typed against the layouts known
        now, staged to a Parquet file. None (nothing done) when the batch needs the warehouse
        first: a schema whose layout is not known yet, DDL or misfits. The flush uses the result
        only if no layout changed since (`_generation`), else it starts over."""
        started = time.perf_counter()
        generation = self._generation
        rows, repeated = first_per_id(collapse(batch.rows))
        known = self._known_cached(rows)
        if known is None:
            return None
        p = self._plan(rows, known) if rows else Plan()
        if p.has_ddl or p.misfits:
            return None
        prepared = self._write_stage(p, repeated, generation)
        self._phase("prepare", started)
        return prepared

    def _flush(self, batch: FlushBatch) -> FlushResult:
        started = time.perf_counter()
        prepared = batch.prepared
        batch.prepared = None  # used once: a retry starts over
        if isinstance(prepared, Prepared) and prepared.generation == self._generation:
            self.metrics.prepared_ahead.labels("used").inc()
        else:
            if prepared is not None:
                self.metrics.prepared_ahead.labels("replanned").inc()
                prepared.discard()
            prepared = self._prepare_here(batch)
            started = self._phase("prepare", started)
        try:
            for table, n in prepared.repeated.items():
                self.metrics.rows_skipped.labels(table_label(table)).inc(n)
            if prepared.staged_rows:
                self._stage(prepared.path, prepared.staged, prepared.load_id)
            started = self._phase("stage", started)
            result = self._transaction(batch, prepared, datetime.now(UTC))
            self._phase("transaction", started)
            return result
        finally:
            prepared.discard()

    def _prepare_here(self, batch: FlushBatch) -> Prepared:
        """The whole preparation, schema evolution included (it runs DDL)."""
        rows, repeated = first_per_id(collapse(batch.rows))
        p = self._evolve(rows) if rows else Plan()
        if p.misfits:
            now = datetime.now(UTC)
            for m in p.misfits:
                self.metrics.schema_changes.labels(m.change).inc(m.occurrences)
                if m.change in _CAPS:
                    self._cap_hit(m)
                    continue
                logger.warning(
                    "%d values of type %s do not fit %s.%s column %s (%s): kept in _unmapped",
                    m.occurrences,
                    m.value_type,
                    m.schema,
                    m.table,
                    m.column,
                    m.column_type,
                )
            for schema in {m.schema for m in p.misfits}:
                self._ensure_changes_table(schema)
                key = (schema, SCHEMA_CHANGES)
                p.columns[key] = {**fixed_columns(SCHEMA_CHANGES), **p.columns.get(key, {})}
            p.rows.extend(_change_rows(p.misfits, now))
        return self._write_stage(p, repeated, self._generation)

    def _cap_hit(self, change: SchemaChange) -> None:
        """The alert of a cap, the first time this process sees a table or schema reach it."""
        cap = _CAPS[change.change]
        key = (change.change, change.schema, change.table if cap == "columns_per_table" else "")
        if key in self._caps_hit:
            return
        self._caps_hit.add(key)
        self.metrics.caps_hit.labels(cap).inc()
        if cap == "columns_per_table":
            logger.warning(
                "cap reached: %s.%s has %d columns (SEGFLOW_SINK_MAX_COLUMNS_PER_TABLE); new "
                "properties of it go to _unmapped (recorded in _segflow_schema_changes)",
                change.schema,
                change.table,
                self.options.max_columns_per_table,
            )
        else:
            logger.warning(
                "cap reached: schema %s has %d tables (SEGFLOW_SINK_MAX_TABLES_PER_SCHEMA); new "
                "event tables (first: %s) are not created, their properties go to "
                "tracks._unmapped (recorded in _segflow_schema_changes)",
                change.schema,
                self.options.max_tables_per_schema,
                change.table,
            )

    def _write_stage(self, p: Plan, repeated: dict[str, int], generation: int) -> Prepared:
        """The flush's Parquet file (one staged row per event, staging.stage_units)."""
        groups = group_rows(p.rows)
        staged = unit_stage_types(groups.keys(), p.columns)
        load_id = uuid.uuid4().hex
        path = self._stage_dir / f"segflow-flush-{load_id}.parquet"
        prepared = Prepared(generation, p, groups, staged, load_id, path, 0, repeated)
        try:
            units = stage_units(p.rows, p.columns)
            prepared.staged_rows = write_units(path, units, p.columns, staged) if units else 0
        except BaseException:
            prepared.discard()
            raise
        return prepared

    def _known_cached(self, rows: Sequence[TableRow]) -> dict[tuple[str, str], Columns] | None:
        """`_known` from the layouts read already; None if a schema's is not known."""
        known: dict[tuple[str, str], Columns] = {}
        for schema in {r.schema for r in rows}:
            layout = self._layouts.get(schema)
            if layout is None:
                return None
            for table, cols in layout.items():
                known[(schema, table)] = cols
        return known

    def _phase(self, name: str, started: float) -> float:
        now = time.perf_counter()
        self.metrics.phase_seconds.labels(name).inc(now - started)
        return now

    def _stage(self, path: Path, staged: Columns, load_id: str) -> None:
        """The staging table (empty, with this flush's columns) and the file in the stage. The
        table is re-created only when the staged columns change: every flush's transaction
        empties it, and a rolled back one leaves it as it was."""
        schema = self.options.control_schema
        if time.monotonic() - self._staging_since > self.options.staging_max_age_h * 900:
            # the name's time stamp is what other instances' sweeps go by: renew it well
            # before they take this table for one of a dead process
            old = self.staging
            self.staging = _staging_name(schema)
            self._staging_since = time.monotonic()
            self._staging_columns = None
            self._run(f"DROP TABLE IF EXISTS {ddl.table_ref(old)}", kind="ddl", table=old)
        if staged != self._staging_columns:  # else it is there, emptied by the last flush
            self._staging_columns = None
            self._run(ddl.create_staging(self.staging, staged), kind="ddl", table=self.staging)
            self._staging_columns = dict(staged)
        self._run(ddl.put_file(str(path), schema, STAGE, load_id), kind="put")

    def _copy(self, load_id: str, count: int) -> None:
        """COPY the staged file into the staging table (inside the flush's transaction)."""
        cur = self._run(
            ddl.copy_into_staging(self.staging, self.options.control_schema, STAGE, load_id),
            kind="copy",
            table=self.staging,
        )
        loaded = sum(int(r[3] or 0) for r in cur.fetchall() if len(r) > 3)
        if loaded != count:
            raise WarehouseRetryableError(
                f"COPY INTO {self.staging} loaded {loaded} of {count} staged rows"
            )

    def _transaction(self, batch: FlushBatch, prepared: Prepared, now: datetime) -> FlushResult:
        p, staged, load_id = prepared.plan, prepared.staged, prepared.load_id
        result = FlushResult(records=batch.records)
        load_ts = now.isoformat()
        self._run("BEGIN", kind="begin")
        try:
            if prepared.staged_rows:
                self._copy(load_id, prepared.staged_rows)
            # Inserts first, then the deletes of replaced rows and the offsets: a client that
            # dies inside the transaction holds row locks for as short a time as possible.
            deletes: list[tuple[str, str]] = []
            for (schema, table), rows in prepared.groups.items():
                cols = p.columns[(schema, table)]
                kind = rows[0].kind
                head = [load_ts] * sum(1 for c in cols if c in ("uuid_ts", "loaded_at"))
                where = [schema, table]
                if kind is Kind.APPEND:
                    lookback = self.options.lookback_hours > 0
                    on = lookback_column(table)
                    # tracks and audit_log rows are staged on their events' rows, flagged
                    flag, renames = _FLAGGED.get(table, (None, None))
                    sql, _ = dml.insert_new(
                        self.staging,
                        schema,
                        table,
                        cols,
                        staged,
                        lookback,
                        on,
                        flag=flag,
                        renames=renames,
                    )
                    binds = list(head)
                    if lookback:
                        first = min(r.values[on] for r in rows)
                        bound = first - timedelta(hours=self.options.lookback_hours)
                        binds.append(bound.isoformat())
                    binds += [schema] if flag else where
                    cur = self._run(sql, binds, kind="insert", table=table)
                    inserted = int(cur.rowcount or 0)
                    skipped = len(rows) - inserted
                    if skipped > 0:
                        self.metrics.rows_skipped.labels(table_label(table)).inc(skipped)
                elif kind is Kind.PLAIN:
                    sql, _ = dml.insert_plain(self.staging, schema, table, cols, staged)
                    cur = self._run(sql, head + where, kind="insert", table=table)
                    inserted = int(cur.rowcount or 0)
                else:
                    load_binds = _load_binds(cols, load_ts, load_id)
                    if kind is Kind.MERGE:
                        sql, _ = dml.merge_insert(self.staging, schema, table, cols, staged)
                    else:
                        sql, _ = dml.insert_plain(self.staging, schema, table, cols, staged)
                    cur = self._run(sql, load_binds + where, kind="upsert", table=table)
                    inserted = int(cur.rowcount or 0)
                    deletes.append((schema, table))
                result.rows_loaded[table] = result.rows_loaded.get(table, 0) + inserted
            for schema, table in deletes:
                self._run(
                    dml.delete_replaced(self.staging, schema, table),
                    [schema, table, load_id],
                    kind="upsert",
                    table=table,
                )
            if prepared.staged_rows:
                # emptied in the same transaction: the staged rows are never written for good
                # (the emulator's DuckDB then never checkpoints them; measured ~25% less work)
                self._run(
                    f"DELETE FROM {ddl.table_ref(self.staging)}", kind="delete", table=self.staging
                )
            if not self.offsets.compare_and_set(self._exec_fn("offsets"), batch.moves()):
                self._rollback()
                raise FencedError([(s.topic, s.partition) for s in batch.slices])
            self._run("COMMIT", kind="commit")
        except FencedError:
            raise
        except BaseException:
            self._rollback()
            raise
        for table, n in result.rows_loaded.items():
            self.metrics.rows_loaded.labels(table_label(table)).inc(n)
        return result

    def _rollback(self) -> None:
        self.metrics.rollbacks.inc()
        try:
            self._run("ROLLBACK", kind="rollback")
        except SegflowError as exc:
            logger.warning("rollback failed (the connection is dropped): %s", exc)
            self._drop_connection()


def _staging_name(schema: str) -> str:
    """A staging table ("schema.name") stamped with its creation time (sweeps drop old ones)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return ddl.staging_table(schema, f"{STAGING_PREFIX}{stamp}_{uuid.uuid4().hex[:8]}")


_CAPS = {"column_limit": "columns_per_table", "table_limit": "tables_per_schema"}

_FLAGGED: dict[str, tuple[str, Mapping[str, str]]] = {
    TRACKS: (TRACKS_FLAG, TRACKS_RENAMES),
    AUDIT_LOG: (AUDIT_FLAG, AUDIT_RENAMES),
}


def _load_binds(cols: Mapping[str, str], load_ts: str, load_id: str) -> list[Any]:
    """Binds of the select list, in column order: load times and the load id."""
    out: list[Any] = []
    for name in cols:
        if name in ("uuid_ts", "loaded_at"):
            out.append(load_ts)
        elif name == "_segflow_load_id":
            out.append(load_id)
    return out


def _change_rows(changes: Sequence[SchemaChange], now: datetime) -> list[TableRow]:
    return [
        TableRow(
            c.schema,
            SCHEMA_CHANGES,
            Kind.APPEND,
            {
                "id": uuid.uuid4().hex,
                "detected_by": DETECTED_BY_SINK,
                "detected_at": now,
                "table_name": c.table,
                "column_name": c.column,
                "change": c.change,
                "column_type": c.column_type,
                "value_type": c.value_type,
                "occurrences": c.occurrences,
                "example_message_id": c.example_message_id,
            },
            None,
            c.example_message_id,
        )
        for c in changes
    ]
