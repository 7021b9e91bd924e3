"""In-place upgrades of warehouses an earlier layout wrote, run once at sink start-up.

Layout 2 reserves column names per table (`tables.reserved_columns`); layout 1 reserved one set
on every table (`LAYOUT_1_RESERVED`), so a trait ``name`` of an identify or group, a property
``name`` of a track, ``user_id`` of a users row and the like went to ``_unmapped``. Layout 1 kept
such a value under its key path (``traits.name``; ``traits.Name`` for a key naming the same
column) and, before that, under the column's name itself (``name``). The upgrade moves each of
them into its column, as layout 2 would have loaded it:

- a table's candidate keys are read first (the distinct keys of its ``_unmapped``), then the
  rows holding one; per row and column the first candidate present wins (the key spelled as the
  column, then other spellings in key order, then the bare column name), the others stay;
- a new column takes the type most of its values have (``NUMBER`` and ``FLOAT`` together make
  ``FLOAT``; strings make ``VARCHAR``, or ``TIMESTAMP_TZ`` when all of them are timestamps); an
  existing column keeps its type; a value of another type stays in ``_unmapped`` (no value is
  lost, none is converted), and so does every value of a table at its column cap;
- the columns are added first (DDL commits by itself), then one transaction per source schema
  moves the values (``UPDATE ... FROM VALUES``: the column set and the rewritten ``_unmapped``,
  only where the column is still NULL and, on users and accounts, the row is the one read, by
  its ``_segflow_load_id``), records each moved column in ``_segflow_schema_changes``
  (``layout_migrated``, with the number of rows) and the schema's layout version in
  `_segflow_layout` of the control schema.

A schema whose upgrade fails (a warehouse error other than a passing one) is rolled back and
logged, and loading goes on: its old rows stay as they were until the next start tries again.
The version row makes the upgrade run once per schema; two sinks starting at once both move
nothing twice (a row whose column is set is skipped) and a sink loading meanwhile writes layout
2 rows, which the upgrade does not touch. A sink of the previous version still loading after the
upgrade writes layout 1 rows that stay as they are: stop those first. Snowflake's OBJECT_DELETE
would rewrite ``_unmapped`` in SQL, but the emulator lacks it, so the object is rewritten here.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.errors import SegflowError
from schemas.naming import (
    OWNED_PREFIX,
    ReservedColumns,
    key_path_column,
    parse_unmapped_key,
    unmapped_key,
)
from sinks.snowflake import ddl
from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.errors import WarehouseRetryableError
from sinks.snowflake.evolution import column_type_from_warehouse, looks_like_timestamp
from sinks.snowflake.schema_sync import SchemaSync
from sinks.snowflake.tables import (
    ACCOUNTS,
    BOOLEAN,
    DETECTED_BY_SINK,
    FLOAT,
    LOAD_ID_COLUMN,
    NUMBER,
    SCHEMA_CHANGES,
    TIMESTAMP,
    USERS,
    VARCHAR,
    layout_of,
    reserved_columns,
)

logger = logging.getLogger(__name__)

LAYOUT_VERSION = 2
LAYOUT_TABLE = "_segflow_layout"
LAYOUT_MIGRATED = "layout_migrated"

LAYOUT_1_RESERVED = ReservedColumns(
    frozenset(
        {
            "id",
            "anonymous_id",
            "user_id",
            "received_at",
            "sent_at",
            "timestamp",
            "original_timestamp",
            "uuid_ts",
            "loaded_at",
            "event",
            "event_text",
            "name",
            "category",
            "group_id",
            "previous_id",
            "channel",
            "canonical_user_id",
            "_unmapped",
            "_masked_fields",
            "_pii_key_version",
        }
    ),
    (OWNED_PREFIX,),
)
"""The names layout 1 kept from every table's properties and traits."""

_TRAIT_TABLES = frozenset({"identifies", "groups", USERS, ACCOUNTS})
_NO_MAP_TABLES = frozenset({"tracks", "aliases", "identity_map", "audit_log"})
_EVENT_IDENTITY = ("id", "_segflow_topic", "_segflow_partition", "_segflow_offset")
_ROWS_PER_UPDATE = 200
_BYTES_PER_UPDATE = 4_000_000
_MIGRATION_IDS = uuid.UUID("0b6a8f8e-5d0c-4a57-8f49-2f1c1c7c2a10")

Columns = dict[str, str]


# -- planning (pure) ---------------------------------------------------------------------------
def map_root(table: str) -> str | None:
    """The map a table's dynamic columns come from (``traits`` / ``properties``); None for a
    table without one (tracks, aliases, segflow's own)."""
    if table in _NO_MAP_TABLES or table.startswith(OWNED_PREFIX):
        return None
    return "traits" if table in _TRAIT_TABLES else "properties"


def freed_columns(table: str) -> frozenset[str]:
    """The names layout 1 reserved on every table and layout 2 leaves to `table`'s map."""
    now = reserved_columns(table)
    return frozenset(c for c in LAYOUT_1_RESERVED.names if c not in now)


def key_column(key: str, root: str, freed: frozenset[str]) -> str | None:
    """The freed column an `_unmapped` key holds a value of, or None: the bare column name
    (the first layout 1), or a key path from `root` naming it (``traits.Name`` -> ``name``)."""
    if key in freed:
        return key
    path = parse_unmapped_key(key)
    if len(path) < 2 or path[0] != root:
        return None
    column = key_path_column(path[1:])
    return column if column in freed else None


def candidates(keys: Iterable[str], root: str, freed: frozenset[str]) -> dict[str, list[str]]:
    """Column -> its candidate keys in the order they are tried: the key spelled as the column
    (``traits.name``), other spellings in key order, the bare column name last."""
    found: dict[str, list[str]] = {}
    for key in keys:
        column = key_column(key, root, freed)
        if column is not None:
            found.setdefault(column, []).append(key)
    for column, keys_of in found.items():
        exact = unmapped_key((root, column))
        keys_of.sort(key=lambda k: (k != exact, k == column, k))
    return found


def value_kind(value: Any) -> str | None:
    """The column type a value of `_unmapped` moves into; None for one that moves nowhere (an
    object, an array, a null)."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return NUMBER if -(10**38) < value < 10**38 else FLOAT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return TIMESTAMP if looks_like_timestamp(value) else VARCHAR
    return None


def new_column_type(kinds: Counter[str]) -> str | None:
    """The type of a new column for values of these kinds: the most common, where NUMBER and
    FLOAT count as FLOAT together and strings as VARCHAR unless all are timestamps."""
    merged: Counter[str] = Counter()
    for kind, n in kinds.items():
        if kind == NUMBER and kinds.get(FLOAT):
            kind = FLOAT
        elif kind == TIMESTAMP and kinds.get(VARCHAR):
            kind = VARCHAR
        merged[kind] += n
    if not merged:
        return None
    return max(sorted(merged), key=lambda k: merged[k])


def fits(column_type: str, value: Any) -> bool:
    """A value moves into a column of `column_type` only as that type (an integer into FLOAT)."""
    kind = value_kind(value)
    if kind is None:
        return False
    if column_type == VARCHAR:
        return isinstance(value, str)
    if column_type == FLOAT:
        return kind in (NUMBER, FLOAT)
    return kind == column_type


def bind_text(column_type: str, value: Any) -> str:
    """The value as the text bound for it (cast to the column's type in SQL)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass
class RowMove:
    """One row's values leaving `_unmapped`: its identity (and load id), the columns set, and
    what stays in `_unmapped` (None when nothing does)."""

    identity: tuple[Any, ...]
    load_id: str | None
    values: dict[str, Any]
    rest: dict[str, Any] | None


def plan_row(
    unmapped: Mapping[str, Any], keys_of: Mapping[str, Sequence[str]], types: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(column -> value moved, what stays): per column the first candidate key present whose
    value fits the column's type."""
    moved: dict[str, Any] = {}
    taken: set[str] = set()
    for column, keys in keys_of.items():
        ctype = types.get(column)
        if ctype is None:
            continue
        for key in keys:
            if key in unmapped and fits(ctype, unmapped[key]):
                moved[column] = unmapped[key]
                taken.add(key)
                break
    rest = {k: v for k, v in unmapped.items() if k not in taken}
    return moved, rest


@dataclass
class TablePlan:
    """The upgrade of one table: candidate keys per column, column types, the rows' moves."""

    table: str
    keys_of: dict[str, list[str]]
    types: dict[str, str] = field(default_factory=dict)
    add: dict[str, str] = field(default_factory=dict)
    moves: list[RowMove] = field(default_factory=list)
    kept: Counter[str] = field(default_factory=Counter)

    def moved(self) -> Counter[str]:
        return Counter(c for m in self.moves for c in m.values)


def plan_table(
    table: str,
    columns: Mapping[str, str],
    keys_of: dict[str, list[str]],
    rows: Iterable[tuple[tuple[Any, ...], str | None, Mapping[str, Any]]],
    max_columns: int,
) -> TablePlan:
    """The moves of a table whose layout is `columns`, from its rows (identity, load id,
    `_unmapped`). Columns missing get the type of their values; a table at its column cap
    takes no new column (those values stay)."""
    plan = TablePlan(table, keys_of)
    seen: dict[tuple[Any, ...], Mapping[str, Any] | None] = {}
    read: list[tuple[tuple[Any, ...], str | None, Mapping[str, Any]]] = []
    kinds: dict[str, Counter[str]] = {c: Counter() for c in keys_of}
    for identity, load_id, unmapped in rows:
        if identity in seen:  # one event loaded twice: one update serves both copies
            if seen[identity] != unmapped:
                seen[identity] = None  # copies that differ: which to write is unknown
            continue
        seen[identity] = unmapped
        read.append((identity, load_id, unmapped))
        for column, keys in keys_of.items():
            key = next((k for k in keys if k in unmapped), None)
            kind = value_kind(unmapped[key]) if key is not None else None
            if kind is not None:
                kinds[column][kind] += 1
    room = max_columns - len(columns)
    for column in sorted(keys_of):
        if column in columns:
            plan.types[column] = columns[column]
            continue
        ctype = new_column_type(kinds[column])
        if ctype is None or room <= 0:
            continue
        plan.types[column] = plan.add[column] = ctype
        room -= 1
    for identity, load_id, unmapped in read:
        if seen[identity] is None:
            plan.kept.update(c for c, ks in keys_of.items() if any(k in unmapped for k in ks))
            continue
        moved, rest = plan_row(unmapped, keys_of, plan.types)
        for column, keys in keys_of.items():
            if column not in moved and any(k in unmapped for k in keys):
                plan.kept[column] += 1
        if moved:
            plan.moves.append(RowMove(identity, load_id, moved, rest or None))
    return plan


def identity_columns(table: str, columns: Mapping[str, str]) -> tuple[str, ...] | None:
    """The columns that find one row again (None: the table cannot be upgraded safely)."""
    names = ("id",) if layout_of(table) in (USERS, ACCOUNTS) else _EVENT_IDENTITY
    return names if all(n in columns for n in names) else None


def update_sql(
    schema: str,
    table: str,
    identity: Sequence[str],
    guard_load_id: bool,
    types: Mapping[str, str],
    moved: Sequence[str],
    rows: int,
) -> str:
    """One UPDATE of `rows` rows moving the `moved` columns: binds per row are the identity,
    the load id (if guarded), each moved value's text, and the JSON of what stays."""
    q = ddl.quote
    width = len(identity) + int(guard_load_id) + len(moved) + 1
    one = "(" + ", ".join(["?"] * width) + ")"
    n = len(identity) + int(guard_load_id)
    sets = [f"{q(c)} = s.column{n + i + 1}::{ddl.sql_type(types[c])}" for i, c in enumerate(moved)]
    sets.append(f'"_UNMAPPED" = PARSE_JSON(s.column{width})')
    where = [f"t.{q(c)} = s.column{i + 1}" for i, c in enumerate(identity)]
    if guard_load_id:
        where.append(f"COALESCE(t.{q(LOAD_ID_COLUMN)}, '') = s.column{len(identity) + 1}")
    where += [f"t.{q(c)} IS NULL" for c in moved]
    return (
        f"UPDATE {ddl.qualified(schema, table)} AS t SET {', '.join(sets)} "
        f"FROM (SELECT * FROM VALUES {', '.join([one] * rows)}) AS s "
        f"WHERE {' AND '.join(where)}"
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(text: Any) -> dict[str, Any] | None:
    """A VARIANT as the connector returns it (JSON text) -> the object; None if not one."""
    if text is None:
        return None
    value = json.loads(text) if isinstance(text, str | bytes) else text
    return value if isinstance(value, dict) else None


# -- carried out -------------------------------------------------------------------------------
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

    def __init__(self, conn: SinkConnection, schemas: SchemaSync, control_schema: str) -> None:
        self.conn = conn
        self.schemas = schemas
        self.control_schema = control_schema
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
        """Read each table's candidate keys and rows holding them; plan the moves."""
        plans = []
        for table, columns in sorted(tables.items()):
            root = map_root(table)
            identity = identity_columns(table, columns)
            if root is None or identity is None:
                continue
            freed = freed_columns(table)
            t = ddl.qualified(schema, table)
            keys = [
                str(k)
                for (k,) in self.conn.run(
                    f'SELECT DISTINCT f.key FROM {t} u, LATERAL FLATTEN(input => u."_UNMAPPED") f',
                    kind="select",
                    table=table,
                ).fetchall()
            ]
            keys_of = candidates(keys, root, freed)
            if not keys_of:
                continue
            guard = layout_of(table) in (USERS, ACCOUNTS) and LOAD_ID_COLUMN in columns
            select = [ddl.quote(c) for c in identity]
            select.append(ddl.quote(LOAD_ID_COLUMN) if guard else "NULL")
            cur = self.conn.run(
                f'SELECT {", ".join(select)}, "_UNMAPPED" FROM {t} WHERE "_UNMAPPED" IS NOT NULL',
                kind="select",
                table=table,
            )
            rows = []
            for *ident, load_id, text in cur.fetchall():
                unmapped = _loads(text)
                if unmapped and any(k in unmapped for ks in keys_of.values() for k in ks):
                    rows.append((tuple(ident), load_id, unmapped))
            plans.append(
                plan_table(table, columns, keys_of, rows, self.schemas.max_columns_per_table)
            )
        return plans

    def migrate_schema(self, schema: str, tables: Mapping[str, Columns]) -> list[Migrated]:
        """Plan, add the columns, then move the values and record it in one transaction."""
        plans = self.plan(schema, tables)
        run = self.conn.run
        for p in plans:
            for column, ctype in p.add.items():
                run(ddl.add_column(schema, p.table, column, ctype), kind="ddl", table=p.table)
        if any(p.add for p in plans):
            plans = self._replan_if_changed(schema, plans)
        if any(p.moves for p in plans):
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
        identity = identity_columns(p.table, columns) or ()
        guard = layout_of(p.table) in (USERS, ACCOUNTS) and LOAD_ID_COLUMN in columns
        groups: dict[tuple[str, ...], list[RowMove]] = {}
        for m in p.moves:
            groups.setdefault(tuple(sorted(m.values)), []).append(m)
        moved: Counter[str] = Counter()
        examples: dict[str, str] = {}
        for names, moves in groups.items():
            for batch in _batches(moves):
                binds: list[Any] = []
                for m in batch:
                    binds += list(m.identity)
                    if guard:
                        binds.append(m.load_id or "")
                    binds += [bind_text(p.types[c], m.values[c]) for c in names]
                    binds.append(_json(m.rest) if m.rest else None)
                sql = update_sql(schema, p.table, identity, guard, p.types, names, len(batch))
                cur = self.conn.run(sql, binds, kind="update", table=p.table)
                count = _updated(cur, len(batch))
                for c in names:
                    moved[c] += count
                    examples.setdefault(c, str(batch[0].identity[0]))
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
        bytes_of = sum(len(str(v)) for v in m.values.values()) + len(_json(m.rest or {}))
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
