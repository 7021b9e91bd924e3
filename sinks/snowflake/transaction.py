"""A flush's warehouse transaction: its rows, upserts and offsets committed together or not at all.

BEGIN, then in order:
 1. COPY the staged file into the staging table (stager.Stager.copy);
 2. insert every table's rows from the staging table: events, the audit log and schema changes
    where their id is new to their table within the lookback (insert-where-not-exists), all of
    a schema's such tables in one multi-table insert (dml.insert_all_new: a flush of many event
    names holds a table per name); misfit records as they are, and the new versions of
    users/accounts (merged with the row they replace) and of identity_map links, one statement
    per table;
 3. delete the users/accounts/identity_map rows those replaced (upsert by delete-insert: MERGE
    cannot run inside a transaction on the emulator). Inserts go first, then the deletes and the
    offsets: a client that dies inside the transaction holds row locks as short a time as it can;
    then, in a schema that got identity links, the chains they touch are resolved: every
    identity_map row re-pointed at its final user (identity_chains.py);
 4. empty the staging table;
 5. compare-and-set the partitions' offsets (offsets.OffsetStore.compare_and_set);
COMMIT.

Abort: a failed compare-and-set (another instance moved an offset) rolls back and raises
FencedError; any other error rolls back and propagates as it was classified (connection.run
wraps every failure: retryable, misfit or fatal). A rollback that fails drops the connection.
Nothing of the batch is committed on any of these paths.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from schemas.errors import SegflowError
from sinks.snowflake import dml
from sinks.snowflake.batcher import FlushBatch
from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.errors import FencedError
from sinks.snowflake.identity_chains import DEFAULT_MAX_HOPS, IdentityChains
from sinks.snowflake.metrics import SinkMetrics, table_label
from sinks.snowflake.offsets import OffsetStore
from sinks.snowflake.rows import TableRow
from sinks.snowflake.stager import StagedFlush, Stager
from sinks.snowflake.staging import (
    AUDIT_FLAG,
    AUDIT_RENAMES,
    TRACKS,
    TRACKS_FLAG,
    TRACKS_RENAMES,
)
from sinks.snowflake.tables import (
    AUDIT_LOG,
    IDENTITY_MAP,
    LOAD_ID_COLUMN,
    LOAD_TIME_COLUMNS,
    Kind,
    lookback_column,
)

logger = logging.getLogger(__name__)

# tracks and audit_log rows are staged on their events' rows, flagged (staging.stage_units)
_FLAGGED: dict[str, tuple[str, Mapping[str, str]]] = {
    TRACKS: (TRACKS_FLAG, TRACKS_RENAMES),
    AUDIT_LOG: (AUDIT_FLAG, AUDIT_RENAMES),
}


@dataclass
class FlushResult:
    records: int
    rows_loaded: dict[str, int] = field(default_factory=dict)
    statements: int = 0
    seconds: float = 0.0
    prepared_here_s: float = 0.0
    """Of `seconds`, the flush's preparation in the worker (not prepared ahead, or re-planned;
    schema evolution included)."""


class FlushTransaction:
    """Runs the numbered steps of a flush's transaction on the sink's connection."""

    def __init__(
        self,
        conn: SinkConnection,
        stager: Stager,
        offsets: OffsetStore,
        metrics: SinkMetrics,
        *,
        lookback_hours: float = 72.0,
        identity_max_hops: int = DEFAULT_MAX_HOPS,
    ) -> None:
        self.conn = conn
        self.stager = stager
        self.offsets = offsets
        self.metrics = metrics
        self.lookback_hours = lookback_hours
        self.chains = IdentityChains(conn, max_hops=identity_max_hops)

    def run(self, batch: FlushBatch, prepared: StagedFlush, now: datetime) -> FlushResult:
        """Load `prepared` (staged already) and move `batch`'s offsets, all or nothing."""
        result = FlushResult(records=batch.records)
        load_ts = now.isoformat()
        self.conn.run("BEGIN", kind="begin")
        try:
            if prepared.staged_rows:
                self.stager.copy(prepared)  # 1.
            replaced = self._insert(prepared, load_ts, result)  # 2.
            for schema, table in replaced:  # 3.
                self.conn.run(
                    dml.delete_replaced(self.stager.table, schema, table),
                    [schema, table, prepared.load_id],
                    kind="upsert",
                    table=table,
                )
            for schema, table in replaced:  # 3. (the chains)
                if table == IDENTITY_MAP:
                    links = [
                        (str(r.values["identifier"]), str(r.values["canonical_user_id"]))
                        for r in prepared.groups[(schema, table)]
                    ]
                    self.chains.run(schema, links, load_ts)
            if prepared.staged_rows:
                self.stager.empty()  # 4.
            if not self.offsets.compare_and_set(self.conn.offsets_execute, batch.moves()):  # 5.
                self.rollback()
                raise FencedError([(s.topic, s.partition) for s in batch.slices])
            self.conn.run("COMMIT", kind="commit")
        except FencedError:
            raise
        except BaseException:
            self.rollback()
            raise
        for table, n in result.rows_loaded.items():
            self.metrics.rows_loaded.labels(table_label(table)).inc(n)
        return result

    def rollback(self) -> None:
        """ROLLBACK; if that fails too, the connection is dropped (its state is unknown)."""
        self.metrics.rollbacks.inc()
        try:
            self.conn.run("ROLLBACK", kind="rollback")
        except SegflowError as exc:
            logger.warning("rollback failed (the connection is dropped): %s", exc)
            self.conn.drop()

    def _insert(
        self, prepared: StagedFlush, load_ts: str, result: FlushResult
    ) -> list[tuple[str, str]]:
        """Step 2: each schema's append tables with one multi-table insert (`_insert_new`), the
        others table by table; returns the upserted tables, whose replaced rows step 3
        deletes."""
        replaced: list[tuple[str, str]] = []
        appends: dict[str, list[tuple[str, list[TableRow]]]] = {}
        for (schema, table), rows in prepared.groups.items():
            if rows[0].kind is Kind.APPEND:
                appends.setdefault(schema, []).append((table, rows))
        for (schema, table), rows in prepared.groups.items():
            cols = prepared.plan.columns[(schema, table)]
            kind = rows[0].kind
            if kind is Kind.APPEND:  # the schema's append tables, where the first of them stood
                # by name: the same tables make the same statement text whichever event came
                # first (the emulator translates a text it has seen once only)
                tables = sorted(appends.pop(schema, []), key=lambda t: t[0])
                for chunk in _chunks(tables, prepared.plan.columns, schema):
                    self._insert_new(prepared, schema, chunk, load_ts, result)
                continue
            if kind is Kind.PLAIN:
                sql, _ = dml.insert_plain(self.stager.table, schema, table, cols, prepared.staged)
                head = [load_ts] * sum(1 for c in cols if c in LOAD_TIME_COLUMNS)
                cur = self.conn.run(sql, [*head, schema, table], kind="insert", table=table)
                inserted = int(cur.rowcount or 0)
            else:
                staging, staged = self.stager.table, prepared.staged
                if kind is Kind.MERGE:
                    sql, _ = dml.merge_insert(staging, schema, table, cols, staged)
                else:
                    sql, _ = dml.insert_plain(staging, schema, table, cols, staged)
                binds = [*load_binds(cols, load_ts, prepared.load_id), schema, table]
                cur = self.conn.run(sql, binds, kind="upsert", table=table)
                inserted = int(cur.rowcount or 0)
                replaced.append((schema, table))
            result.rows_loaded[table] = result.rows_loaded.get(table, 0) + inserted
        return replaced

    def _insert_new(
        self,
        prepared: StagedFlush,
        schema: str,
        tables: list[tuple[str, list[TableRow]]],
        load_ts: str,
        result: FlushResult,
    ) -> None:
        """Append tables' rows whose id the table does not hold within the lookback, in one
        multi-table insert; rows a table held already count as skipped."""
        lookback = self.lookback_hours > 0
        targets = []
        for table, _ in tables:
            flag, renames = _FLAGGED.get(table, (None, None))
            targets.append(
                dml.AppendTarget(
                    table,
                    prepared.plan.columns[(schema, table)],
                    lookback_column(table),
                    flag,
                    renames,
                )
            )
        sql, binds_load_ts, binds_load_id = dml.insert_all_new(
            self.stager.table, schema, targets, prepared.staged, lookback
        )
        binds: list[Any] = [load_ts] if binds_load_ts else []
        if binds_load_id:
            binds.append(prepared.load_id)
        if lookback:
            for target, (_, rows) in zip(targets, tables, strict=True):
                on = target.lookback_column
                first = min(r.values[on] for r in rows)
                binds.append((first - timedelta(hours=self.lookback_hours)).isoformat())
        binds.append(schema)
        names = [t for t, _ in tables]
        label = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        cur = self.conn.run(sql, binds, kind="insert", table=label)
        columns = [d[0] for d in cur.description or ()]
        counts = dml.inserted_per_table(targets, columns, cur.fetchone())
        if counts is None:  # an answer of another shape: the total only (metrics, not data)
            logger.warning("a multi-table insert answered %s; rows per table not counted", columns)
            result.rows_loaded[label] = int(cur.rowcount or 0)
            return
        for (table, rows), inserted in zip(tables, counts, strict=True):
            result.rows_loaded[table] = result.rows_loaded.get(table, 0) + inserted
            skipped = len(rows) - inserted
            if skipped > 0:
                self.metrics.rows_skipped.labels(table_label(table)).inc(skipped)


# A multi-table insert's text stays well under Snowflake's 1 MB statement limit
# (schemas.snowflake_limits.MAX_STATEMENT_BYTES): a flush's append tables of one schema go into
# as few statements as keep each under this estimate of its text, and under a number of
# targets (each a join in its subquery: a bound on what one statement asks the warehouse to
# plan, not measured on Snowflake yet).
_STATEMENT_BUDGET = 600_000
_TARGETS_PER_STATEMENT = 64


def _text_estimate(schema: str, table: str, columns: Mapping[str, str]) -> int:
    """More than the text a table adds to a multi-table insert: each column named in its
    column list and its VALUES, perhaps cast in the subquery; the table named in its INTO
    clause, its WHEN and its join (with the staging table's name, at most 255 characters)."""
    names = 4 * (len(schema) + len(table) + 8) + 255 + 400
    return names + sum(4 * (len(name) + 8) + 40 for name in columns)


def _chunks(
    tables: list[tuple[str, list[TableRow]]],
    columns: Mapping[tuple[str, str], Mapping[str, str]],
    schema: str,
) -> list[list[tuple[str, list[TableRow]]]]:
    """`tables` in order, split where a statement would pass the text budget or the number of
    targets (a table over the budget by itself is a statement of its own)."""
    out: list[list[tuple[str, list[TableRow]]]] = []
    size = 0
    for entry in tables:
        n = _text_estimate(schema, entry[0], columns[(schema, entry[0])])
        if not out or size + n > _STATEMENT_BUDGET or len(out[-1]) >= _TARGETS_PER_STATEMENT:
            out.append([])
            size = 0
        out[-1].append(entry)
        size += n
    return out


def load_binds(cols: Mapping[str, str], load_ts: str, load_id: str) -> list[Any]:
    """Binds of the select list, in column order: load times and the load id."""
    out: list[Any] = []
    for name in cols:
        if name in LOAD_TIME_COLUMNS:
            out.append(load_ts)
        elif name == LOAD_ID_COLUMN:
            out.append(load_id)
    return out
