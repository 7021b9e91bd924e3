"""In-place upgrades of warehouses an earlier layout wrote, run once at sink start-up.

Layout 2 reserves column names per table (`tables.reserved_columns`); layout 1 reserved one set
on every table, so a trait ``name`` of an identify or group, a property ``name`` of a track,
``user_id`` of a users row and the like went to ``_unmapped``. `LayoutMigration` moves them into
their columns, as planned by layout_upgrade.py, for every source schema not yet at
`LAYOUT_VERSION`:

- a table's candidate keys are read first (the distinct keys of its ``_unmapped``), then, when
  a column is new, the rows holding one, to count its values' types; the plan's new columns
  are added (DDL commits by itself);
- then one transaction per source schema reads those rows again and moves the values
  (``UPDATE ... FROM VALUES``: the column set and the rewritten ``_unmapped``, only where the
  column is still NULL and, on users and accounts, the row is the one read, by its
  ``_segflow_load_id``), records each moved
  column in ``_segflow_schema_changes`` (``layout_migrated``, with the number of rows) and the
  schema's layout version in `_segflow_layout` of the control schema.

A schema whose upgrade fails (a warehouse error other than a passing one) is rolled back and
logged, and loading goes on: its old rows stay as they were until the next start tries again.
The version row makes the upgrade run once per schema; two sinks starting at once both move
nothing twice (a row whose column is set is skipped) and a sink loading meanwhile writes layout
2 rows, which the upgrade does not touch. A sink of the previous version still loading after the
upgrade writes layout 1 rows that stay as they are: stop those first. Snowflake's OBJECT_DELETE
would rewrite ``_unmapped`` in SQL, but the emulator lacks it, so the object is rewritten here
(read, and written back whole). Rows are read only where they hold a candidate key (``GET`` in
SQL), ordered by identity (copies adjacent), `page_rows` at a time, and moves are sent before
more than a page of them is pending: memory is bounded by `PAGE_ROWS` and the size of one
``_unmapped``, never by the size of the table.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.errors import SegflowError
from sinks.snowflake import ddl
from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.errors import WarehouseRetryableError
from sinks.snowflake.evolution import column_type_from_warehouse
from sinks.snowflake.layout_upgrade import (
    Columns,
    Row,
    RowMove,
    TablePlan,
    bind_text,
    candidates,
    count_kinds,
    distinct_rows,
    freed_columns,
    identity_columns,
    json_text,
    key_column,
    map_root,
    plan_types,
    row_move,
    update_sql,
)
from sinks.snowflake.schema_sync import SchemaSync
from sinks.snowflake.session import fetch_pages
from sinks.snowflake.tables import (
    ACCOUNTS,
    DETECTED_BY_SINK,
    LOAD_ID_COLUMN,
    SCHEMA_CHANGES,
    USERS,
    layout_of,
)

logger = logging.getLogger(__name__)

LAYOUT_VERSION = 2
LAYOUT_TABLE = "_segflow_layout"
LAYOUT_MIGRATED = "layout_migrated"

PAGE_ROWS = 10_000
"""Rows read from the warehouse at a time (and moves pending at most): what bounds the upgrade's
memory, with the size of one row's `_unmapped`."""
_ROWS_PER_UPDATE = 200
_BYTES_PER_UPDATE = 4_000_000
_MIGRATION_IDS = uuid.UUID("0b6a8f8e-5d0c-4a57-8f49-2f1c1c7c2a10")


def _loads(text: Any) -> dict[str, Any] | None:
    """A VARIANT as the connector returns it (JSON text) -> the object; None if not one."""
    if text is None:
        return None
    value = json.loads(text) if isinstance(text, str | bytes) else text
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Migrated:
    """One column filled by the upgrade of one table."""

    schema: str
    table: str
    column: str
    column_type: str
    moved: int
    kept: int
    example_id: str


class LayoutMigration:
    """Brings every source schema of the database to `LAYOUT_VERSION`, once per process."""

    def __init__(
        self,
        conn: SinkConnection,
        schemas: SchemaSync,
        control_schema: str,
        page_rows: int = PAGE_ROWS,
    ) -> None:
        self.conn = conn
        self.schemas = schemas
        self.control_schema = control_schema
        self.page_rows = page_rows
        self.done = False

    def ensure(self) -> list[Migrated]:
        """Upgrade what needs it (the first call of a process; later calls do nothing)."""
        if self.done:
            return []
        out = self.run()
        self.done = True
        return out

    def run(self) -> list[Migrated]:
        run = self.conn.run
        layout = ddl.qualified(self.control_schema, LAYOUT_TABLE)
        run(
            f'CREATE TABLE IF NOT EXISTS {layout} ("SCHEMA_NAME" VARCHAR, '
            '"VERSION" NUMBER(38,0), "MIGRATED_AT" TIMESTAMP_TZ)',
            kind="ddl",
            table=LAYOUT_TABLE,
        )
        done = {
            str(s).lower()
            for (s,) in run(
                f'SELECT "SCHEMA_NAME" FROM {layout} WHERE "VERSION" >= ?',
                [LAYOUT_VERSION],
                kind="select",
                table=LAYOUT_TABLE,
            ).fetchall()
        }
        out: list[Migrated] = []
        for schema, tables in sorted(self._source_schemas().items()):
            if schema in done:
                continue
            try:
                out += self.migrate_schema(schema, tables)
            except WarehouseRetryableError:
                raise
            except SegflowError as exc:  # the old rows stay as they are; loading goes on
                logger.error(
                    "upgrade of schema %s to warehouse layout %d failed, its rows are unchanged "
                    "and loading goes on; it is tried again at the next start: %s",
                    schema,
                    LAYOUT_VERSION,
                    exc,
                )
        return out

    def _source_schemas(self) -> dict[str, dict[str, Columns]]:
        """Schema -> table -> column -> data type, of base tables with an `_unmapped`."""
        cur = self.conn.run(
            "SELECT c.table_schema, c.table_name, c.column_name, c.data_type, c.numeric_scale "
            "FROM information_schema.columns c JOIN information_schema.tables t "
            "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE t.table_type = 'BASE TABLE' AND c.table_schema NOT IN (?, ?)",
            [self.control_schema.upper(), "INFORMATION_SCHEMA"],
            kind="select",
        )
        found: dict[str, dict[str, Columns]] = {}
        for schema, table, column, data_type, scale in cur.fetchall():
            cols = found.setdefault(str(schema).lower(), {}).setdefault(str(table).lower(), {})
            cols[str(column).lower()] = column_type_from_warehouse(str(data_type), scale)
        return {
            s: {t: c for t, c in tables.items() if "_unmapped" in c}
            for s, tables in found.items()
            if any("_unmapped" in c for c in tables.values())
        }

    def plan(self, schema: str, tables: Mapping[str, Columns]) -> list[TablePlan]:
        """Each table's candidate keys, and the types of the columns they fill (a new column's
        from its values, counted over the rows holding a key, read a page at a time)."""
        plans = []
        for table, columns in sorted(tables.items()):
            root = map_root(table)
            identity = identity_columns(table, columns)
            if root is None or identity is None:
                continue
            freed = freed_columns(table)
            cur = self.conn.run(
                f"SELECT DISTINCT f.key FROM {ddl.qualified(schema, table)} u, "
                'LATERAL FLATTEN(input => u."_UNMAPPED") f',
                kind="select",
                table=table,
            )
            keys = [
                str(k)
                for page in fetch_pages(cur, self.page_rows, table=table)
                for (k,) in page
                if key_column(str(k), root, freed) is not None
            ]
            keys_of = candidates(keys, root, freed)
            if not keys_of:
                continue
            kinds: dict[str, Counter[str]] = {c: Counter() for c in keys_of}
            if any(c not in columns for c in keys_of):  # a new column: typed as its values
                for row, _ in distinct_rows(self._rows(schema, table, columns, keys_of)):
                    count_kinds(kinds, keys_of, row)
            plans.append(
                plan_types(table, columns, keys_of, kinds, self.schemas.max_columns_per_table)
            )
        return plans

    def _rows(
        self, schema: str, table: str, columns: Columns, keys_of: Mapping[str, Sequence[str]]
    ) -> Iterator[Row]:
        """The rows holding a candidate key (filtered in SQL), ordered by identity (copies
        adjacent), read `page_rows` at a time: one page is held, never the table."""
        identity = identity_columns(table, columns) or ()
        guard = layout_of(table) in (USERS, ACCOUNTS) and LOAD_ID_COLUMN in columns
        select = [ddl.quote(c) for c in identity]
        select.append(ddl.quote(LOAD_ID_COLUMN) if guard else "NULL")
        keys = [k for ks in keys_of.values() for k in ks]
        # GET takes the key as one field name (dots included); the parentheses keep the
        # emulator from reading `? IS NOT NULL` as GET's argument
        holds = " OR ".join(['(GET("_UNMAPPED", ?)) IS NOT NULL'] * len(keys))
        cur = self.conn.run(
            f'SELECT {", ".join(select)}, "_UNMAPPED" FROM {ddl.qualified(schema, table)} '
            f"WHERE {holds} ORDER BY {', '.join(ddl.quote(c) for c in identity)}",
            keys,
            kind="select",
            table=table,
        )
        for page in fetch_pages(cur, self.page_rows, table=table):
            for *ident, load_id, text in page:
                unmapped = _loads(text)
                if unmapped and any(k in unmapped for k in keys):
                    yield tuple(ident), load_id, unmapped

    def migrate_schema(self, schema: str, tables: Mapping[str, Columns]) -> list[Migrated]:
        """Plan, add the columns, then move the values and record it in one transaction."""
        plans = self.plan(schema, tables)
        run = self.conn.run
        for p in plans:
            for column, ctype in p.add.items():
                run(ddl.add_column(schema, p.table, column, ctype), kind="ddl", table=p.table)
        if any(p.add for p in plans):
            plans = self._replan_if_changed(schema, plans)
        if any(p.types for p in plans):  # values may move
            self.schemas.ensure_changes_table(schema)
        layout = ddl.qualified(self.control_schema, LAYOUT_TABLE)
        out: list[Migrated] = []
        run("BEGIN", kind="transaction")
        try:
            (already,) = run(
                f'SELECT COUNT(*) FROM {layout} WHERE "SCHEMA_NAME" = ? AND "VERSION" >= ?',
                [schema, LAYOUT_VERSION],
                kind="select",
                table=LAYOUT_TABLE,
            ).fetchone()
            if already:
                run("ROLLBACK", kind="transaction")
                return []
            run(
                f"INSERT INTO {layout} SELECT column1, column2, column3::TIMESTAMP_TZ "
                "FROM VALUES (?, ?, ?)",
                [schema, LAYOUT_VERSION, datetime.now(UTC).isoformat()],
                kind="insert",
                table=LAYOUT_TABLE,
            )
            for p in plans:
                out += self._move(schema, p, tables[p.table])
            self._record(schema, out)
            run("COMMIT", kind="transaction")
        except BaseException:
            try:
                run("ROLLBACK", kind="transaction")
            except Exception:  # the original failure is what matters
                logger.warning("rollback of the layout upgrade of %s failed", schema)
            raise
        self.schemas.reset()
        for m in out:
            self.conn.metrics.schema_changes.labels(LAYOUT_MIGRATED).inc()
            logger.info(
                "layout %d: %s.%s: %d values moved from _unmapped to column %s (%s), %d kept",
                LAYOUT_VERSION,
                m.schema,
                m.table,
                m.moved,
                m.column,
                m.column_type,
                m.kept,
            )
        logger.info("schema %s upgraded to warehouse layout %d", schema, LAYOUT_VERSION)
        return out

    def _replan_if_changed(self, schema: str, plans: list[TablePlan]) -> list[TablePlan]:
        """Plans again a table whose added column someone else (a sink loading meanwhile)
        made first, with another type."""
        cur = self.conn.run(ddl.columns_query(), [schema.upper()], kind="select")
        actual: dict[str, Columns] = {}
        for table, column, data_type, scale in cur.fetchall():
            cols = actual.setdefault(str(table).lower(), {})
            cols[str(column).lower()] = column_type_from_warehouse(str(data_type), scale)
        out = []
        for p in plans:
            now = actual.get(p.table, {})
            if all(now.get(c) == t for c, t in p.add.items()):
                out.append(p)
            else:
                out += self.plan(schema, {p.table: now})
        return out

    def _move(self, schema: str, p: TablePlan, columns: Columns) -> list[Migrated]:
        """Read the table's rows again, a page at a time, and move their values: UPDATEs of
        at most `_ROWS_PER_UPDATE` rows, sent whenever `page_rows` moves are pending (so the
        process holds about a page of rows and a page of moves, whatever the table's size)."""
        if not p.types:
            return []
        identity = identity_columns(p.table, columns) or ()
        guard = layout_of(p.table) in (USERS, ACCOUNTS) and LOAD_ID_COLUMN in columns
        moved: Counter[str] = Counter()
        examples: dict[str, str] = {}
        pending: dict[tuple[str, ...], list[RowMove]] = {}

        def send(names: tuple[str, ...]) -> None:
            for batch in _batches(pending.pop(names)):
                binds: list[Any] = []
                for m in batch:
                    binds += list(m.identity)
                    if guard:
                        binds.append(m.load_id or "")
                    binds += [bind_text(p.types[c], m.values[c]) for c in names]
                    binds.append(json_text(m.rest) if m.rest else None)
                sql = update_sql(schema, p.table, identity, guard, p.types, names, len(batch))
                cur = self.conn.run(sql, binds, kind="update", table=p.table)
                count = _updated(cur, len(batch))
                for c in names:
                    moved[c] += count
                    examples.setdefault(c, str(batch[0].identity[0]))

        held = 0
        for row, same in distinct_rows(self._rows(schema, p.table, columns, p.keys_of)):
            move = row_move(row, same, p.keys_of, p.types, p.kept)
            if move is None:
                continue
            names = tuple(sorted(move.values))
            group = pending.setdefault(names, [])
            group.append(move)
            held += 1
            if len(group) >= _ROWS_PER_UPDATE:
                held -= len(group)
                send(names)
            if held >= self.page_rows:
                for names in list(pending):
                    send(names)
                held = 0
        for names in list(pending):
            send(names)
        return [
            Migrated(schema, p.table, c, p.types[c], moved[c], p.kept[c], examples[c])
            for c in sorted(moved)
            if moved[c]
        ]

    def _record(self, schema: str, done: Sequence[Migrated]) -> None:
        """The moved columns as `layout_migrated` rows of `_segflow_schema_changes`."""
        if not done:
            return
        now = datetime.now(UTC).isoformat()
        binds: list[Any] = []
        for m in done:
            ident = uuid.uuid5(_MIGRATION_IDS, f"{LAYOUT_VERSION}|{schema}|{m.table}|{m.column}")
            binds += [
                now,
                m.table,
                m.column,
                LAYOUT_MIGRATED,
                m.column_type,
                m.column_type,
                m.moved,
                m.example_id,
                str(ident),
                DETECTED_BY_SINK,
            ]
        one = "(" + ", ".join(["?"] * 10) + ")"
        self.conn.run(
            f'INSERT INTO {ddl.qualified(schema, SCHEMA_CHANGES)} ("DETECTED_AT", '
            '"TABLE_NAME", "COLUMN_NAME", "CHANGE", "COLUMN_TYPE", "VALUE_TYPE", '
            '"OCCURRENCES", "EXAMPLE_MESSAGE_ID", "ID", "DETECTED_BY") '
            "SELECT column1::TIMESTAMP_TZ, column2, column3, column4, column5, column6, "
            "column7, column8, column9, column10 FROM VALUES " + ", ".join([one] * len(done)),
            binds,
            kind="insert",
            table=SCHEMA_CHANGES,
        )


def _batches(moves: Sequence[RowMove]) -> Iterable[Sequence[RowMove]]:
    """Rows in UPDATEs of at most `_ROWS_PER_UPDATE` rows and about `_BYTES_PER_UPDATE` bytes."""
    start, size = 0, 0
    for i, m in enumerate(moves):
        bytes_of = sum(len(str(v)) for v in m.values.values()) + len(json_text(m.rest or {}))
        if i > start and (i - start >= _ROWS_PER_UPDATE or size + bytes_of > _BYTES_PER_UPDATE):
            yield moves[start:i]
            start, size = i, 0
        size += bytes_of
    if start < len(moves):
        yield moves[start:]


def _updated(cur: Any, default: int) -> int:
    """Rows an UPDATE changed (its first result column), or `default` if not told."""
    row = cur.fetchone()
    return int(row[0]) if row else default
