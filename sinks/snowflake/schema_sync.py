"""Schema evolution carried out: the layouts the warehouse has, the plan's DDL, the records of it.

The planning is pure (evolution.plan, caps.fold_capped_tables); this module runs what a plan
asks for on the sink's connection. DDL commits by itself in Snowflake, so it runs before a
flush's transaction and is safe to repeat: new schemas and tables, added and widened columns,
recorded in `_segflow_schema_changes` right away. Layouts read from INFORMATION_SCHEMA are cached
per schema; `generation` moves whenever one may have changed (a plan applied, the cache reset),
so a flush prepared ahead against an older layout is planned again. A widening (`widen`, also
for other commands) reads its table's layout afresh first: it is never planned on a stale one.

Caps: the first time a table or schema reaches its cap in this process, a warning is logged and
`segflow_sink_caps_hit_total{cap}` counts it (the alert); every flush it affects records a
``column_limit`` / ``table_limit`` row in `_segflow_schema_changes`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.errors import SegflowError
from sinks.snowflake import ddl
from sinks.snowflake.caps import fold_capped_tables
from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.evolution import (
    Plan,
    SchemaChange,
    column_type_from_warehouse,
    on_ladder,
    plan,
)
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.promotions import (
    LAYOUT_MAX_AGE_S,
    Promotions,
    apply_promotions,
    read_promotions,
)
from sinks.snowflake.rows import TableRow
from sinks.snowflake.tables import DETECTED_BY_SINK, SCHEMA_CHANGES, fixed_columns
from sinks.snowflake.widening import finished, is_leftover, resume_steps

logger = logging.getLogger(__name__)

Columns = dict[str, str]
TableKey = tuple[str, str]

CAPS = {"column_limit": "columns_per_table", "table_limit": "tables_per_schema"}
"""Schema-change kinds of the caps -> the cap's label in `segflow_sink_caps_hit_total`."""

_EVOLVE_ROUNDS = 3


class SchemaSync:
    """The layouts of the schemas a flush writes, brought to what its rows need."""

    def __init__(
        self,
        conn: SinkConnection,
        metrics: SinkMetrics,
        *,
        max_columns_per_table: int = 1000,
        max_tables_per_schema: int = 500,
    ) -> None:
        self.conn = conn
        self.metrics = metrics
        self.max_columns_per_table = max_columns_per_table
        self.max_tables_per_schema = max_tables_per_schema
        self.generation = 0
        """Moves whenever a layout may have changed."""
        self._layouts: dict[str, dict[str, Columns]] = {}
        self._changes_ready: set[str] = set()  # schemas whose _segflow_schema_changes is current
        self._caps_hit: set[tuple[str, str, str]] = set()  # (change, schema, table) alerted
        self.promotions: Promotions = {}  # read with the layouts (sinks/snowflake/promotions.py)
        self.layout_max_age_s = LAYOUT_MAX_AGE_S  # layouts older are read again
        self._read_at: dict[str, float] = {}

    def reset(self) -> None:
        """Read every layout again before the next flush (the session was dropped, or the
        warehouse refused some record's data: a layout changed by someone else is one cause)."""
        self.generation += 1
        self._layouts.clear()
        self._changes_ready.clear()

    # -- planning ----------------------------------------------------------------------------
    def plan_flush(self, rows: list[TableRow]) -> Plan:
        """The flush's plan with its DDL applied and its misfits and caps recorded as rows of
        `_segflow_schema_changes` (loaded with the flush)."""
        p = self._evolve(rows) if rows else Plan()
        if not p.misfits:
            return p
        for m in p.misfits:
            self.metrics.schema_changes.labels(m.change).inc(m.occurrences)
            if m.change in CAPS:
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
            self.ensure_changes_table(schema)
            key = (schema, SCHEMA_CHANGES)
            p.columns[key] = {**fixed_columns(SCHEMA_CHANGES), **p.columns.get(key, {})}
        now = datetime.now(UTC)
        p.rows.extend(m.row(now) for m in p.misfits)
        return p

    def plan_ahead(self, rows: list[TableRow]) -> Plan | None:
        """The plan from the layouts read already, without the warehouse; None when it needs it
        (a layout not known yet, DDL or misfits to record)."""
        known = self._known_cached(rows)
        if known is None:
            return None
        p = self._plan(rows, known) if rows else Plan()
        if p.has_ddl or p.misfits:
            return None
        return p

    def _plan(self, rows: list[TableRow], known: Mapping[TableKey, Mapping[str, str]]) -> Plan:
        """evolution.plan within the caps: rows of tables a schema has no room for folded."""
        rows = apply_promotions(rows, self.promotions)
        rows, capped = fold_capped_tables(rows, known, self.max_tables_per_schema)
        p = plan(rows, known, self.max_columns_per_table)
        p.misfits.extend(capped)
        return p

    def _evolve(self, rows: list[TableRow]) -> Plan:
        for _ in range(_EVOLVE_ROUNDS):
            p = self._plan(rows, self._known(rows))
            if not p.has_ddl:
                return p
            self.apply(p)
        return self._plan(rows, self._known(rows))

    # -- layouts -----------------------------------------------------------------------------
    def layout(self, schema: str) -> dict[str, Columns] | None:
        """Tables and columns of a schema (None if the schema has none of our tables)."""
        if schema in self._layouts:
            if not self._stale(schema):
                return self._layouts[schema]
            self._forget(schema)  # read again: columns and promotions others made
        cur = self.conn.run(ddl.columns_query(), [schema.upper()], kind="select")
        tables: dict[str, Columns] = {}
        for table, column, data_type, scale in cur.fetchall():
            cols = tables.setdefault(str(table).lower(), {})
            cols[str(column).lower()] = column_type_from_warehouse(str(data_type), scale)
        self.repair_widenings(schema, tables)
        self.promotions[schema] = read_promotions(self.conn.run, schema, tables)
        self._read_at[schema] = time.monotonic()
        if not tables:
            return None
        self._layouts[schema] = tables
        return tables

    def repair_widenings(self, schema: str, tables: dict[str, Columns]) -> None:
        """Finish every widening an earlier process (or another sink) left half done."""
        for table, cols in tables.items():
            if not any(map(is_leftover, cols)):
                continue
            for resume in resume_steps(schema, table, cols):
                if resume.column is None:
                    msg = "%s.%s: widening leftover %s of an unknown column; rename it by hand"
                    logger.error(msg, schema, table, resume.leftover)
                    continue
                try:
                    for sql in resume.steps:
                        self.conn.run(sql, kind="ddl", table=table)
                except SegflowError:
                    # another sink finishing the same widening at the same moment won the race
                    now = self._columns_now(schema, table)
                    left = [n for n in now if ddl.widened_column(n, now) == resume.column]
                    if left or resume.column not in now:
                        raise
                    cols.clear()
                    cols.update(now)
                    logger.warning(
                        "%s.%s.%s: widening finished by another sink", schema, table, resume.column
                    )
                    continue
                finished(cols, resume)
                logger.warning(
                    "finished widening %s.%s.%s to %s", schema, table, resume.column, resume.target
                )

    def _columns_now(self, schema: str, table: str) -> Columns:
        """A table's columns as the warehouse has them now (not cached, not repaired)."""
        cur = self.conn.run(ddl.columns_query(), [schema.upper()], kind="select")
        return {
            str(column).lower(): column_type_from_warehouse(str(data_type), scale)
            for t, column, data_type, scale in cur.fetchall()
            if str(t).lower() == table
        }

    def widen(self, schema: str, table: str, column: str, target: str) -> str | None:
        """Widen `column` of `table` to `target` (a type above its own on evolution.LADDER),
        keeping its name and every value (ddl.widen_steps). The table's layout is read afresh
        first (finishing any widening left half done), so a widening another sink did is seen
        and not done twice; a step that fails because another sink widens the same column at
        the same moment is forgiven once the layout shows the column widened. Returns the
        column's type before, or None when there was nothing to widen."""
        self._forget(schema)
        cols = (self.layout(schema) or {}).get(table, {})
        source = cols.get(column)
        if source is None or not on_ladder(source, target):
            return None
        try:
            for sql in ddl.widen_steps(schema, table, column, source, target):
                self.conn.run(sql, kind="ddl", table=table)
        except SegflowError:
            self._forget(schema)
            if (self.layout(schema) or {}).get(table, {}).get(column) != target:
                raise
            logger.warning("%s.%s.%s was widened by another sink", schema, table, column)
            return None
        finally:
            self._forget(schema)
        self.metrics.widenings.labels(source, target).inc()
        logger.info("widened %s.%s.%s from %s to %s", schema, table, column, source, target)
        return source

    def _stale(self, schema: str) -> bool:
        return time.monotonic() - self._read_at.get(schema, 0.0) > self.layout_max_age_s

    def _forget(self, schema: str) -> None:
        """Read a schema's layout again next time (it changed)."""
        self.generation += 1
        self._layouts.pop(schema, None)

    def _known(self, rows: Sequence[TableRow]) -> dict[TableKey, Mapping[str, str]]:
        known: dict[TableKey, Mapping[str, str]] = {}
        for schema in {r.schema for r in rows}:
            for table, cols in (self.layout(schema) or {}).items():
                known[(schema, table)] = cols
        return known

    def _known_cached(self, rows: Sequence[TableRow]) -> dict[TableKey, Columns] | None:
        """`_known` from the layouts read already; None if a schema's is not known."""
        known: dict[TableKey, Columns] = {}
        for schema in {r.schema for r in rows}:
            layout = self._layouts.get(schema)
            if layout is None or self._stale(schema):
                return None
            for table, cols in layout.items():
                known[(schema, table)] = cols
        return known

    # -- DDL and its records -----------------------------------------------------------------
    def apply(self, p: Plan) -> None:
        """Run the plan's DDL and record it; then forget the layouts it touched."""
        run = self.conn.run
        touched = {s for s, _ in p.create_tables} | {s for s, _ in p.add_columns}
        for schema in {s for s, _ in p.create_tables}:
            if self._layouts.get(schema) is None:
                run(ddl.create_schema(schema), kind="ddl")
        for (schema, table), cols in p.create_tables.items():
            run(ddl.create_table(schema, table, cols), kind="ddl", table=table)
        for (schema, table), cols in p.add_columns.items():
            for name, typ in cols.items():
                run(ddl.add_column(schema, table, name, typ), kind="ddl", table=table)
        changes = p.ddl_changes()
        for (schema, table), widenings in p.widen_columns.items():
            for name, w in sorted(widenings.items()):
                source = self.widen(schema, table, name, w.target)
                if source is not None:
                    changes.append(
                        SchemaChange(
                            schema,
                            table,
                            name,
                            "column_widened",
                            w.target,
                            w.value_type,
                            w.occurrences,
                            w.example_message_id,
                            source,
                        )
                    )
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

    def ensure_changes_table(self, schema: str) -> None:
        """`_segflow_schema_changes` of a schema exists with every column it has now (a table
        made by an older version gets the new ones)."""
        if schema in self._changes_ready:
            return
        layout = self._layouts.get(schema)
        if layout is None:
            layout = self.layout(schema) or {}
        have = layout.get(SCHEMA_CHANGES)
        fixed = fixed_columns(SCHEMA_CHANGES)
        if have is None:
            self.conn.run(ddl.create_schema(schema), kind="ddl")
            self.conn.run(
                ddl.create_table(schema, SCHEMA_CHANGES, fixed), kind="ddl", table=SCHEMA_CHANGES
            )
            self._forget(schema)
        else:
            missing = {n: t for n, t in fixed.items() if n not in have}
            for name, typ in missing.items():
                self.conn.run(
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
            self.ensure_changes_table(schema)
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
                    c.previous_type,
                ]
            one = "(" + ", ".join(["?"] * 11) + ")"
            self.conn.run(
                f'INSERT INTO {ddl.qualified(schema, SCHEMA_CHANGES)} ("DETECTED_AT", '
                '"TABLE_NAME", "COLUMN_NAME", "CHANGE", "COLUMN_TYPE", "VALUE_TYPE", '
                '"OCCURRENCES", "EXAMPLE_MESSAGE_ID", "ID", "DETECTED_BY", "PREVIOUS_TYPE") '
                "SELECT column1::TIMESTAMP_TZ, column2, column3, column4, column5, column6, "
                "column7, column8, column9, column10, column11 FROM VALUES "
                + ", ".join([one] * len(items)),
                binds,
                kind="insert",
                table=SCHEMA_CHANGES,
            )

    def _cap_hit(self, change: SchemaChange) -> None:
        """The alert of a cap, the first time this process sees a table or schema reach it."""
        cap = CAPS[change.change]
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
                self.max_columns_per_table,
            )
        else:
            logger.warning(
                "cap reached: schema %s has %d tables (SEGFLOW_SINK_MAX_TABLES_PER_SCHEMA); new "
                "event tables (first: %s) are not created, their properties go to "
                "tracks._unmapped (recorded in _segflow_schema_changes)",
                change.schema,
                self.max_tables_per_schema,
                change.table,
            )
