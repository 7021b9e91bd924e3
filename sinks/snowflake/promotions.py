"""Promotions: a key of `_unmapped` given a typed column of its own, as pure functions.

A value without a column (a name collision, an empty or reserved name, a misfit, a table at its
column cap) sits in its row's `_unmapped` under a key: its key path from the map's root
(``properties.a-b``, schemas.naming.unmapped_key) or, for a misfit or a capped column, the
column's name (``plan``). `segflow promote` (sinks/snowflake/promote.py) moves such a key of one
table into a column and records the promotion in the schema's `_segflow_promotions` registry;
the sink reads the registry with the table layouts and, from then on, writes the key's value
into that column (`apply_promotions`, called where a flush is planned).

This module holds the rules both share: the default column of a key (`default_column`), the
columns a promotion may not take (`column_problem`), the type of a key's values (`infer_type`,
evolution's typing), the text a value is cast from when rows are backfilled (`cell_text`), the
plan of one promotion (`plan_promotion`), the registry's layout and the SQL text.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.errors import SegflowError
from schemas.naming import child_column, snake_case
from schemas.snowflake_limits import MAX_COLUMNS_PER_TABLE
from schemas.timestamps import parse_timestamp
from sinks.snowflake import ddl
from sinks.snowflake.errors import WarehouseRetryableError
from sinks.snowflake.evolution import fit, value_type
from sinks.snowflake.rows import TableRow
from sinks.snowflake.staging import to_text
from sinks.snowflake.tables import (
    BOOLEAN,
    FLOAT,
    NUMBER,
    TIMESTAMP,
    VARCHAR,
    VARIANT,
    reserved_columns,
)

logger = logging.getLogger(__name__)

PROMOTIONS = "_segflow_promotions"
"""The registry table of a source schema: one row per promoted (table, key)."""

REGISTRY_COLUMNS: dict[str, str] = {
    "id": VARCHAR,
    "table_name": VARCHAR,
    "unmapped_key": VARCHAR,
    "column_name": VARCHAR,
    "column_type": VARCHAR,
    "promoted_at": TIMESTAMP,
}

PROMOTED = "promoted"
"""The `_segflow_schema_changes.change` of rows moved by a promotion."""
DETECTED_BY_PROMOTE = "promote"
"""Its `detected_by`: an operator's promotion, not a stage of the pipeline."""

TYPES: tuple[str, ...] = (VARCHAR, NUMBER, FLOAT, BOOLEAN, TIMESTAMP)
"""Column types a promotion can give (objects and arrays become JSON text, as rows.py does)."""

_MAP_ROOTS = ("properties", "traits")


class PromotionError(ValueError):
    """A promotion that cannot be made as asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Promotion:
    """One registry entry: `key` of `table`'s `_unmapped` is written to `column`."""

    table: str
    key: str
    column: str
    column_type: str


Promotions = dict[str, dict[str, list[Promotion]]]
"""schema -> table -> its promotions (as the sink keeps them)."""


# -- keys and columns ------------------------------------------------------------------------
def split_key(key: str) -> list[str]:
    """An `_unmapped` key's path (``properties.a\\.b.c`` -> ``["properties", "a.b", "c"]``):
    the inverse of schemas.naming.unmapped_key."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in key:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def default_column(key: str) -> str:
    """The column the naming rules give a key: a property or trait path flattened without its
    root (``properties.address.city`` -> ``address_city``), a context path with it
    (``context_app_x``), a misfit's or capped column's key is that column; ``""`` when a part
    of the path normalises to nothing."""
    parts = split_key(key)
    if len(parts) > 1 and parts[0] in _MAP_ROOTS:
        parts = parts[1:]
    column = ""
    for part in parts:
        column = child_column(column, part)
        if not column:
            return ""
    return column


def column_problem(column: str, table: str) -> str | None:
    """Why `column` cannot take a promoted key in `table` (None: it can)."""
    if not column:
        return "the key's name normalises to nothing: choose a column with --column"
    if column in reserved_columns(table):  # the sink's own rule: what it never writes there
        return f"column {column} is one segflow writes itself: choose another with --column"
    if snake_case(column) != column:
        return (
            f"{column!r} is not a warehouse column name (snake_case, e.g. {snake_case(column)!r})"
        )
    return None


# -- types and values --------------------------------------------------------------------------
def value_kind(value: Any) -> str:
    """The column type a value asks for (evolution.value_type; objects and arrays: VARCHAR,
    kept as JSON text as the sink keeps arrays)."""
    vtype = value_type(value) or VARCHAR
    return VARCHAR if vtype == VARIANT else vtype


def infer_type(kinds: Iterable[str]) -> str:
    """The narrowest of `TYPES` that holds values of every kind in `kinds` (VARCHAR if none)."""
    found = set(kinds)
    if len(found) == 1:
        return found.pop()
    if found == {NUMBER, FLOAT}:
        return FLOAT
    return VARCHAR


def fits(column_type: str, value: Any) -> bool:
    """Does `value` go into a column of `column_type` as it is (no widening)?"""
    return fit(column_type, value_kind(value)) == "ok"


def cell_text(value: Any, column_type: str) -> str:
    """The text a backfill casts into a column of `column_type` (`CAST(text AS type)`): what
    the sink's staging would write for the same value."""
    if column_type == NUMBER:
        return str(int(value))
    if column_type == FLOAT:
        return repr(float(value))
    if column_type == BOOLEAN:
        return "true" if value else "false"
    if column_type == TIMESTAMP:
        moment = parse_timestamp(value)
        return moment.isoformat() if moment is not None else str(value)
    return str(to_text(value))


def load_unmapped(text: str | None) -> dict[str, Any]:
    """An `_unmapped` document as read back (JSON text; integers of any size kept exact)."""
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def dump_unmapped(obj: Mapping[str, Any]) -> str | None:
    """An `_unmapped` document to write back: None when nothing is left (as the sink writes)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) if obj else None


# -- the plan ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromotionPlan:
    """What one promotion does to one table."""

    schema: str
    table: str
    key: str
    column: str
    column_type: str
    column_exists: bool
    registered: bool
    """The registry already maps the key to this column (a run again)."""
    movable: int
    """Rows whose value moves (the column is empty there and the value fits)."""
    occupied: int
    """Rows whose column already holds a value: the key stays in their `_unmapped`."""
    misfits: dict[str, int]
    """Values that do not fit the column's type, by their own type: they stay."""
    kinds: dict[str, int]
    """Every value of the key, by type."""

    @property
    def stays(self) -> int:
        return self.occupied + sum(self.misfits.values())

    def describe(self) -> list[str]:
        """The plan in lines for a person."""
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items())) or "none"
        col = "exists" if self.column_exists else "added"
        lines = [
            f"table      {self.schema}.{self.table}",
            f"key        {self.key}  (values: {kinds})",
            f"column     {self.column} {self.column_type} ({col})",
            f"rows       {self.movable} to move",
            f"stay       {self.stays} in _unmapped"
            + (f" ({self.occupied} where the column holds a value)" if self.occupied else ""),
        ]
        if self.registered:
            lines.append("registry   already promoted (this run moves what is left)")
        return lines


def plan_promotion(
    *,
    schema: str,
    table: str,
    key: str,
    columns: Mapping[str, str],
    values: Iterable[tuple[Any, bool]],
    registered: Promotion | None,
    column: str | None = None,
    column_type: str | None = None,
) -> PromotionPlan:
    """The plan of promoting `key` of `table` (whose layout is `columns`: name -> type) from
    the key's `values` (each with whether its row's target column already holds a value);
    `column` and `column_type` as asked (None: the registry's, else the naming rules' column
    and the narrowest type of the values). `values` is read once and counted, never held, so
    it may stream a table of any size. Raises PromotionError when it cannot be made."""
    if registered is not None:
        if column is not None and column != registered.column:
            raise PromotionError(
                f"{key} of {schema}.{table} is already promoted to column {registered.column}"
            )
        column = registered.column
    target = column if column is not None else default_column(key)
    problem = column_problem(target, table)
    if problem is not None:
        raise PromotionError(f"{key} of {schema}.{table}: {problem}")
    tally: Counter[tuple[str, bool]] = Counter((value_kind(v), bool(o)) for v, o in values)
    kinds: Counter[str] = Counter()
    for (kind, _), n in tally.items():
        kinds[kind] += n
    existing = columns.get(target)
    if existing is not None:
        if existing not in TYPES:
            raise PromotionError(
                f"column {target} of {schema}.{table} is {existing}, which a promotion does not "
                "write: choose another with --column"
            )
        if column_type is not None and column_type != existing:
            raise PromotionError(
                f"column {target} of {schema}.{table} is {existing}, not {column_type}: change "
                "its type first or choose another column with --column"
            )
        ctype = existing
    elif len(columns) >= MAX_COLUMNS_PER_TABLE:
        raise PromotionError(
            f"{schema}.{table} has {len(columns)} columns, the most a table may have "
            f"({MAX_COLUMNS_PER_TABLE}): promote into an existing column with --column"
        )
    elif registered is not None:
        ctype = registered.column_type
    else:
        ctype = column_type or infer_type(kinds)
    if column_type is not None and column_type not in TYPES:
        raise PromotionError(f"type {column_type}: expected one of {', '.join(TYPES)}")
    misfits: Counter[str] = Counter()
    occupied = movable = 0
    for (kind, taken), n in tally.items():
        if taken:
            occupied += n
        elif fit(ctype, kind) == "ok":
            movable += n
        else:
            misfits[kind] += n
    if registered is None:
        if not tally:
            raise PromotionError(f"no row of {schema}.{table} holds {key} in _unmapped")
        if misfits:
            listed = ", ".join(f"{n} {k}" for k, n in sorted(misfits.items()))
            raise PromotionError(
                f"{sum(misfits.values())} values of {key} do not fit {ctype} ({listed}): "
                "choose a wider --type (VARCHAR holds every value) or another column"
            )
        if occupied:
            raise PromotionError(
                f"column {target} of {schema}.{table} already holds a value in {occupied} of the "
                f"{kinds.total()} rows with {key} (a name collision?): choose another with --column"
            )
    return PromotionPlan(
        schema=schema,
        table=table,
        key=key,
        column=target,
        column_type=ctype,
        column_exists=existing is not None,
        registered=registered is not None,
        movable=movable,
        occupied=occupied,
        misfits=dict(misfits),
        kinds=dict(kinds),
    )


# -- the sink's side -----------------------------------------------------------------------------
def apply_promotions(rows: list[TableRow], promotions: Promotions) -> list[TableRow]:
    """Rows with the promoted keys of their tables moved from `unmapped` into their columns,
    where the column is free in that row and the value fits its type (else the value stays
    where it is). The input rows are not changed: changed rows are copies."""
    if not promotions:
        return rows
    out = rows
    for i, row in enumerate(rows):
        if not row.unmapped:
            continue
        by_table = promotions.get(row.schema)
        found = by_table.get(row.table) if by_table else None
        if not found:
            continue
        values: dict[str, Any] | None = None
        unmapped: dict[str, Any] | None = None
        for p in found:
            source = unmapped if unmapped is not None else row.unmapped
            if p.key not in source:
                continue
            value = source[p.key]
            current = values if values is not None else row.values
            if current.get(p.column) is not None or not fits(p.column_type, value):
                continue
            if values is None:
                values, unmapped = dict(row.values), dict(row.unmapped)
            assert unmapped is not None
            values[p.column] = value if isinstance(value, str | int | float) else to_text(value)
            del unmapped[p.key]
        if values is None:
            continue
        if out is rows:
            out = list(rows)
        out[i] = TableRow(row.schema, row.table, row.kind, values, unmapped or None, row.message_id)
    return out


LAYOUT_MAX_AGE_S = 30.0
"""How old a sink's cached layouts and promotions may get: it reads them again after this, so a
promotion (or a column someone added) reaches a running sink within it plus one flush."""


def read_promotions(
    run: Callable[..., Any], schema: str, tables: dict[str, dict[str, str]]
) -> dict[str, list[Promotion]]:
    """The registry of a schema whose layout is `tables` (empty when it has none), read with
    `run` (the sink's SinkConnection.run). A promoted column the table lacks yet is added here
    (and to `tables`): `segflow promote` registers first and lets the sinks add the column, so
    it is never altered under a sink's open transaction by another session."""
    if PROMOTIONS not in tables:
        return {}
    cur = run(registry_query(schema), kind="select", table=PROMOTIONS)
    out: dict[str, list[Promotion]] = {}
    for table, promotions in registry_entries(cur.fetchall()).items():
        cols = tables.get(table)
        if cols is None:
            continue
        for p in promotions:
            if p.column not in cols:
                try:
                    sql = ddl.add_column(schema, table, p.column, p.column_type)
                    run(sql, kind="ddl", table=table)
                except WarehouseRetryableError:
                    raise
                except SegflowError as exc:  # never stop loading for it: the key stays put
                    logger.warning(
                        "promoted column %s.%s.%s not added: %s", schema, table, p.column, exc
                    )
                    continue
                cols[p.column] = p.column_type
            out.setdefault(table, []).append(p)
    return out


def registry_entries(rows: Iterable[tuple[Any, ...]]) -> dict[str, list[Promotion]]:
    """Rows of `registry_query` -> table -> promotions."""
    out: dict[str, list[Promotion]] = {}
    for table, key, column, ctype in rows:
        t = str(table).lower()
        entry = Promotion(t, str(key), str(column).lower(), str(ctype).upper())
        out.setdefault(t, []).append(entry)
    return out


# -- SQL text ----------------------------------------------------------------------------------
def registry_query(schema: str) -> str:
    return (
        'SELECT "TABLE_NAME", "UNMAPPED_KEY", "COLUMN_NAME", "COLUMN_TYPE" '
        f'FROM {ddl.qualified(schema, PROMOTIONS)} ORDER BY "PROMOTED_AT"'
    )


def scan_query(schema: str, table: str, column: str, column_exists: bool) -> str:
    """Rows holding the key (bind: the key): id, `_unmapped` as JSON text and whether the
    target column holds a value."""
    occupied = f"{ddl.quote(column)} IS NOT NULL" if column_exists else "FALSE"
    return (
        'SELECT "ID", "DOC", "OCCUPIED" FROM (SELECT "ID", TO_JSON("_UNMAPPED") AS "DOC", '
        f'{occupied} AS "OCCUPIED", GET("_UNMAPPED", ?) AS "VALUE" '
        f'FROM {ddl.qualified(schema, table)}) WHERE "VALUE" IS NOT NULL'
    )


STAGING_COLUMNS: dict[str, str] = {
    "id": VARCHAR,
    "old_unmapped": VARCHAR,
    "new_unmapped": VARCHAR,
    "value": VARCHAR,
}
"""The backfill's staging table: row id, `_unmapped` as read and as it becomes, the value's
text."""


def backfill_statement(schema: str, table: str, staging: str, column: str, ctype: str) -> str:
    """Moves the staged values: only rows still as they were read (their `_unmapped` unchanged,
    the column empty), so a row changed meanwhile is left to the next sweep."""
    t = ddl.qualified(schema, table)
    c = ddl.quote(column)
    return (
        f'UPDATE {t} SET {c} = CAST(s."VALUE" AS {ddl.sql_type(ctype)}), '
        f'"_UNMAPPED" = PARSE_JSON(s."NEW_UNMAPPED") FROM {ddl.table_ref(staging)} s '
        f'WHERE {t}."ID" = s."ID" AND TO_JSON({t}."_UNMAPPED") = s."OLD_UNMAPPED" '
        f"AND {t}.{c} IS NULL"
    )
