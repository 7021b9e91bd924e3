"""Column typing and schema evolution, as pure functions.

Every value is typed (``value_type``); a new column takes the type of its values in the batch
(``unify``); a value meets an existing column with ``fit``: it fits, it widens the column along
the ladder (``LADDER``: integer -> float -> string; boolean and timestamp -> string), or it is a
misfit that goes to ``_unmapped`` (objects, non-finite floats, columns off the ladder). ``plan``
applies these rules to all rows of a flush against the known table layouts and returns what to
create, add, widen and record, plus the rows as they will be written. Nothing here does I/O.

Typing is also the pre-flight against Snowflake's limits (schemas.snowflake_limits) for what
fits `_unmapped`: integers beyond 38 digits are typed FLOAT, non-finite floats VARCHAR (they go
to `_unmapped` of a FLOAT or NUMBER column), a string is a timestamp only if it stays within
years 1-9999 in UTC. Sizes are checked where a record is first seen (misfits.oversized).

Caps: a table takes at most `max_columns` columns (new ones beyond go to `_unmapped`, recorded
as ``column_limit``); a schema at most `max_tables` tables (caps.fold_capped_tables).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from schemas.timestamps import parse_timestamp
from sinks.snowflake.rows import TableRow
from sinks.snowflake.tables import (
    BOOLEAN,
    DETECTED_BY_SINK,
    FLOAT,
    NUMBER,
    SCHEMA_CHANGES,
    TIMESTAMP,
    VARCHAR,
    VARIANT,
    Kind,
    fixed_columns,
)

OTHER = "OTHER"  # a column someone else made with a type we do not write (DATE, ARRAY, ...)

Fit = Literal["ok", "widen", "misfit"]

_TS_SHAPE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}(:?\d{2})?)?$"
)
_NUMBER_LIMIT = 10**38


def looks_like_timestamp(value: str) -> bool:
    """ISO-8601 date-times (Segment types such strings as timestamps)."""
    if len(value) < 16 or len(value) > 40 or not _TS_SHAPE.match(value):
        return False
    try:
        parse_timestamp(value)  # in UTC: an offset can push year 1 or 9999 out of range
    except (ValueError, OverflowError):
        return False
    return True


def value_type(value: Any) -> str | None:
    """The warehouse type a value calls for; None for null (which never makes a column)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return NUMBER if -_NUMBER_LIMIT < value < _NUMBER_LIMIT else FLOAT
    if isinstance(value, float):
        return FLOAT if value == value and value not in (float("inf"), float("-inf")) else VARCHAR
    if isinstance(value, datetime):
        return TIMESTAMP
    if isinstance(value, str):
        return TIMESTAMP if looks_like_timestamp(value) else VARCHAR
    return VARIANT


LADDER: dict[str, str] = {NUMBER: FLOAT, FLOAT: VARCHAR, BOOLEAN: VARCHAR, TIMESTAMP: VARCHAR}
"""The type a column widens to next. VARCHAR is the top; VARIANT and types we do not write
(``OTHER``) never widen. How each step writes the old values: ddl.WIDEN_CASTS."""

_SCALARS = frozenset({NUMBER, FLOAT, BOOLEAN, TIMESTAMP, VARCHAR})


def _holds(column_type: str, vtype: str) -> bool:
    return column_type in (VARCHAR, vtype) or (column_type == FLOAT and vtype == NUMBER)


def widen_target(column_type: str, vtype: str) -> str | None:
    """The first type up the ladder from `column_type` that holds a value of `vtype`, or None
    (the column holds it already, is off the ladder, or the value is not a scalar)."""
    if vtype not in _SCALARS or _holds(column_type, vtype):
        return None
    step = LADDER.get(column_type)
    while step is not None and not _holds(step, vtype):
        step = LADDER.get(step)
    return step


def on_ladder(source: str, target: str) -> bool:
    """Is `target` above `source` on the ladder?"""
    step = LADDER.get(source)
    while step is not None and step != target:
        step = LADDER.get(step)
    return step is not None


def unify(a: str, b: str) -> str:
    """The type of a new column whose values in one batch have types a and b."""
    if a == b:
        return a
    if {a, b} == {NUMBER, FLOAT}:
        return FLOAT
    return VARCHAR


def fit(column_type: str, vtype: str) -> Fit:
    """Can a value of type `vtype` go into a column of `column_type`?"""
    if column_type == VARIANT or _holds(column_type, vtype):
        return "ok"
    return "widen" if widen_target(column_type, vtype) is not None else "misfit"


def fits_as_is(column_type: str, value: Any) -> bool:
    """A cheap check, without typing the value, that it fits an existing column unchanged:
    True only where ``fit(column_type, value_type(value)) == "ok"`` (False means: type it)."""
    if column_type in (VARCHAR, VARIANT):
        return True
    t = type(value)
    if column_type == FLOAT:
        return (t is float and value - value == 0.0) or (
            t is int and -_NUMBER_LIMIT < value < _NUMBER_LIMIT
        )
    if column_type == NUMBER:
        return t is int and -_NUMBER_LIMIT < value < _NUMBER_LIMIT
    if column_type == BOOLEAN:
        return t is bool
    if column_type == TIMESTAMP:
        return t is datetime
    return False


def column_type_from_warehouse(data_type: str, scale: int | None) -> str:
    """Our type name for an INFORMATION_SCHEMA.COLUMNS data_type (and numeric_scale)."""
    t = data_type.upper()
    if t in ("TEXT", "VARCHAR", "STRING", "CHAR", "CHARACTER"):
        return VARCHAR
    if t in ("NUMBER", "DECIMAL", "NUMERIC", "INT", "INTEGER", "BIGINT"):
        return NUMBER if not scale else FLOAT
    if t in ("FLOAT", "DOUBLE", "REAL", "FLOAT8", "DOUBLE PRECISION"):
        return FLOAT
    if t == "BOOLEAN":
        return BOOLEAN
    if t.startswith("TIMESTAMP"):
        return TIMESTAMP
    if t in ("VARIANT", "OBJECT", "ARRAY"):
        return VARIANT
    return OTHER


TableKey = tuple[str, str]  # (schema, table)


@dataclass(frozen=True)
class SchemaChange:
    """One row of `_segflow_schema_changes`."""

    schema: str
    table: str
    column: str
    change: str  # column_added | column_widened | misfit | column_limit | table_limit
    column_type: str | None
    value_type: str | None
    occurrences: int
    example_message_id: str
    previous_type: str | None = None  # a widened column's type before

    def row(self, detected_at: datetime) -> TableRow:
        """The change as a row the sink loads with its flush (misfits and caps)."""
        values = {
            "id": uuid.uuid4().hex,
            "detected_by": DETECTED_BY_SINK,
            "detected_at": detected_at,
            "table_name": self.table,
            "column_name": self.column,
            "change": self.change,
            "column_type": self.column_type,
            "value_type": self.value_type,
            "occurrences": self.occurrences,
            "example_message_id": self.example_message_id,
            "previous_type": self.previous_type,
        }
        return TableRow(
            self.schema, SCHEMA_CHANGES, Kind.APPEND, values, None, self.example_message_id
        )


@dataclass
class Widening:
    """A column a flush widens: its type in the layout the plan read, the type it needs, and
    the values that need it (their number and first message id; `value_type` the last one's
    type)."""

    source: str
    target: str
    value_type: str
    occurrences: int
    example_message_id: str


@dataclass
class Plan:
    """What a flush must change in the warehouse before it loads, and the rows it loads."""

    create_tables: dict[TableKey, dict[str, str]] = field(default_factory=dict)
    add_columns: dict[TableKey, dict[str, str]] = field(default_factory=dict)
    widen_columns: dict[TableKey, dict[str, Widening]] = field(default_factory=dict)
    misfits: list[SchemaChange] = field(default_factory=list)
    rows: list[TableRow] = field(default_factory=list)
    columns: dict[TableKey, dict[str, str]] = field(default_factory=dict)
    """Every table of the flush -> its columns and types after the changes."""

    @property
    def has_ddl(self) -> bool:
        return bool(self.create_tables or self.add_columns or self.widen_columns)

    def ddl_changes(self) -> list[SchemaChange]:
        """Added columns, as schema-change records (example ids not tracked). Widenings are
        recorded by who carries them out (schema_sync: another sink may have done one)."""
        out = []
        for (schema, table), cols in self.add_columns.items():
            for col, typ in cols.items():
                out.append(SchemaChange(schema, table, col, "column_added", typ, typ, 1, ""))
        for (schema, table), cols in self.create_tables.items():
            fixed = fixed_columns(table)
            for col, typ in cols.items():
                if col not in fixed:
                    out.append(SchemaChange(schema, table, col, "column_added", typ, typ, 1, ""))
        return out


def plan(
    rows: Iterable[TableRow],
    known: Mapping[TableKey, Mapping[str, str]],
    max_columns: int = 1000,
) -> Plan:
    """Type every dynamic value of `rows` against `known` table layouts (missing = new table).

    Values that do not fit their column are moved into the row's `unmapped` (the input rows are
    not changed: such rows are copied). A column that meets a value it cannot hold is widened
    up the ladder to the first type that holds every value of the flush.
    """
    rows = rows if isinstance(rows, list) else list(rows)
    as_is = _tables_as_is(rows, known)
    result = Plan()
    cols_of: dict[TableKey, dict[str, str]] = {}
    new_of: dict[TableKey, dict[str, str]] = {}
    misfit_count: dict[tuple[str, str, str, str, str, str], list[Any]] = {}
    out_rows = result.rows

    for row in rows:
        key = (row.schema, row.table)
        cols = cols_of.get(key)
        if cols is None:
            existing = known.get(key)
            fixed = fixed_columns(row.table)
            if existing is None:
                cols = dict(fixed)
                result.create_tables[key] = cols
            else:
                cols = dict(existing)
                for name, typ in fixed.items():
                    if name not in cols:
                        new_of.setdefault(key, {})[name] = typ
                        cols[name] = typ
            cols_of[key] = cols
        if key in as_is:
            out_rows.append(row)
            continue
        fixed = fixed_columns(row.table)
        if row.values.keys() <= fixed.keys():  # only fixed columns (audit_log): nothing to type
            out_rows.append(row)
            continue
        new_cols = new_of.get(key)
        creating = key in result.create_tables
        widened = result.widen_columns.get(key)
        moved: dict[str, Any] | None = None
        for name, value in row.values.items():
            if value is None or name in fixed:
                continue
            ctype = cols.get(name)
            if (
                ctype is not None
                and not creating
                and (new_cols is None or name not in new_cols)
                and (widened is None or name not in widened)
                and fits_as_is(ctype, value)
            ):
                continue  # the steady state: an existing column and a value of its type
            vtype = value_type(value)
            if vtype is None:
                continue
            if widened is not None and ctype is not None and name in widened:
                w = widened[name]
                if fit(w.source, vtype) != "ok":  # one more value the old type cannot hold
                    w.occurrences += 1
                    w.value_type = vtype
            if ctype is None:
                if len(cols) >= max_columns:
                    moved = moved or {}
                    moved[name] = value
                    _count(misfit_count, key, name, "column_limit", None, vtype, row.message_id)
                    continue
                cols[name] = vtype
                if key not in result.create_tables:
                    if new_cols is None:
                        new_cols = new_of.setdefault(key, {})
                    new_cols[name] = vtype
                continue
            if creating or (new_cols is not None and name in new_cols):
                # a column this batch creates: its type follows all of the batch's values
                merged = unify(ctype, vtype)
                if merged != ctype:
                    cols[name] = merged
                    if key in result.create_tables:
                        result.create_tables[key][name] = merged
                    else:
                        new_of[key][name] = merged
                continue
            verdict = fit(ctype, vtype)
            if verdict == "ok":
                continue
            if verdict == "widen" and (vtype != VARCHAR or type(value) is str):
                target = widen_target(ctype, vtype)
                assert target is not None
                if widened is None:
                    widened = result.widen_columns[key] = {}
                prior = widened.get(name)
                if prior is None:  # counted here; a further widening was counted above
                    widened[name] = Widening(ctype, target, vtype, 1, row.message_id)
                else:
                    prior.target = target
                cols[name] = target
                continue
            moved = moved or {}
            moved[name] = value
            _count(misfit_count, key, name, "misfit", ctype, vtype, row.message_id)
        if moved:
            values = {k: v for k, v in row.values.items() if k not in moved}
            unmapped = dict(row.unmapped or {})
            unmapped.update(moved)
            row = TableRow(row.schema, row.table, row.kind, values, unmapped, row.message_id)
        out_rows.append(row)

    result.add_columns = {k: v for k, v in new_of.items() if v}
    result.columns = cols_of
    for (schema, table, column, change, ctype, vtype), (n, example) in misfit_count.items():
        result.misfits.append(
            SchemaChange(schema, table, column, change, ctype or None, vtype or None, n, example)
        )
    return result


_AS_IS_TYPES: dict[str, frozenset[type]] = {
    NUMBER: frozenset({int}),
    FLOAT: frozenset({int, float}),
    BOOLEAN: frozenset({bool}),
    TIMESTAMP: frozenset({datetime}),
}


def _tables_as_is(
    rows: list[TableRow], known: Mapping[TableKey, Mapping[str, str]]
) -> set[TableKey]:
    """Tables whose rows all fit their existing columns unchanged (the steady state), found
    column by column: a set of value types per column instead of a check per value. The rows of
    these tables need no per-value typing; any doubt leaves a table to the per-value path."""
    values_of: dict[TableKey, list[dict[str, Any]]] = {}
    for row in rows:
        key = (row.schema, row.table)
        group = values_of.get(key)
        if group is None:
            group = values_of[key] = []
        group.append(row.values)
    clean: set[TableKey] = set()
    for key, values in values_of.items():
        cols = known.get(key)
        if cols is None:
            continue
        fixed = fixed_columns(key[1])
        if not fixed.keys() <= cols.keys():
            continue
        if all(_column_as_is(cols.get(name), values, name) for name in _dynamic(values, fixed)):
            clean.add(key)
    return clean


def _dynamic(values: list[dict[str, Any]], fixed: Mapping[str, str]) -> set[str]:
    return set().union(*values) - fixed.keys()


def _column_as_is(ctype: str | None, values: list[dict[str, Any]], name: str) -> bool:
    """Does every value of column `name` fit its existing column `ctype` as it is?"""
    if ctype is None:
        return False
    if ctype in (VARCHAR, VARIANT):
        return True
    allowed = _AS_IS_TYPES.get(ctype)
    if allowed is None:
        return False
    column = [v.get(name) for v in values]
    types = set(map(type, column))
    types.discard(type(None))
    if ctype == TIMESTAMP and str in types:
        # ISO strings (traits such as created_at): each distinct one checked once
        if not all(map(looks_like_timestamp, {x for x in column if type(x) is str})):
            return False
        types.discard(str)
    if not types <= allowed:
        return False
    if int in types:
        ints = [x for x in column if type(x) is int]
        if not (min(ints) > -_NUMBER_LIMIT and max(ints) < _NUMBER_LIMIT):
            return False
    if float in types:
        # NaN or inf anywhere makes the sum not finite (so may an overflow: then the slow path)
        total = sum(x for x in column if type(x) is float)
        if total - total != 0.0:
            return False
    return True


def _count(
    counts: dict[tuple[str, str, str, str, str, str], list[Any]],
    key: TableKey,
    column: str,
    change: str,
    ctype: str | None,
    vtype: str,
    message_id: str,
) -> None:
    k = (key[0], key[1], column, change, ctype or "", vtype)
    entry = counts.get(k)
    if entry is None:
        counts[k] = [1, message_id]
    else:
        entry[0] += 1
