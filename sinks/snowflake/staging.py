"""The Parquet file of one flush: every row of every table, one column per distinct column name.

All tables of a flush share one staged file and one staging table (columns: the union of their
columns, plus ``_segflow_schema``/``_segflow_table`` saying where a row goes). A column keeps its
warehouse type when every table agrees on it, else it is staged as text and cast on insert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.timestamps import parse_timestamp
from sinks.snowflake.rows import JsonText, TableRow
from sinks.snowflake.tables import (
    BOOLEAN,
    FLOAT,
    LOAD_ID_COLUMN,
    LOAD_TIME_COLUMNS,
    NUMBER,
    TIMESTAMP,
    VARCHAR,
    VARIANT,
)

SCHEMA_COLUMN = "_segflow_schema"
TABLE_COLUMN = "_segflow_table"
UNMAPPED = "_unmapped"

TableKey = tuple[str, str]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_text(value: Any) -> str | None:
    """A value as the text Snowflake casts into any of our column types."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float | str):
        return str(value)
    return orjson.dumps(value, default=_json_default).decode()


def _to_timestamp(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return parse_timestamp(value)


def _to_variant(value: Any) -> str | None:
    if value is None or isinstance(value, JsonText):
        return value
    return orjson.dumps(value, default=_json_default).decode()


_ARROW: dict[str, tuple[pa.DataType, Callable[[Any], Any]]] = {
    NUMBER: (pa.decimal128(38, 0), lambda v: v),
    FLOAT: (pa.float64(), lambda v: None if v is None else float(v)),
    BOOLEAN: (pa.bool_(), lambda v: None if v is None else bool(v)),
    TIMESTAMP: (pa.timestamp("us", tz="UTC"), _to_timestamp),
    VARIANT: (pa.string(), _to_variant),
    VARCHAR: (pa.string(), to_text),
}


def staged_columns(
    tables: Iterable[TableKey], columns: Mapping[TableKey, Mapping[str, str]]
) -> dict[str, str]:
    """Column -> staging type over all tables of a flush (VARCHAR where tables disagree)."""
    out: dict[str, str] = {SCHEMA_COLUMN: VARCHAR, TABLE_COLUMN: VARCHAR}
    for key in tables:
        for name, typ in columns[key].items():
            if name in LOAD_TIME_COLUMNS or name == LOAD_ID_COLUMN:
                continue
            stage_type = typ if typ in _ARROW else VARCHAR
            seen = out.get(name)
            if seen is None:
                out[name] = stage_type
            elif seen != stage_type:
                out[name] = VARCHAR
    return out


def group_rows(rows: Iterable[TableRow]) -> dict[TableKey, list[TableRow]]:
    groups: dict[TableKey, list[TableRow]] = {}
    for row in rows:
        groups.setdefault((row.schema, row.table), []).append(row)
    return groups


def write_parquet(
    path: Path,
    groups: Mapping[TableKey, list[TableRow]],
    columns: Mapping[TableKey, Mapping[str, str]],
    stage_types: Mapping[str, str],
) -> int:
    """Write every row to one Parquet file (column names upper-case). Returns the row count."""
    tables = [
        _table_of(key, rows, columns[key], stage_types) for key, rows in groups.items() if rows
    ]
    if not tables:
        return 0
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    pq.write_table(table, path, compression="snappy")
    return table.num_rows


def _table_of(
    key: TableKey, rows: list[TableRow], columns: Mapping[str, str], stage_types: Mapping[str, str]
) -> pa.Table:
    """The staged columns of one table's rows.

    Fast path: pyarrow converts the rows' value dicts into typed columns in C++ (no Python
    lookup per value). A column holding values that are not of its staged Python type (text
    that must be parsed into a timestamp, numbers staged as text) fails that conversion and is
    then converted value by value."""
    names: list[str] = []
    fields: list[pa.Field] = []
    variants: list[str] = []
    for name in columns:
        stype = stage_types.get(name)
        if stype is None or name in (SCHEMA_COLUMN, TABLE_COLUMN, UNMAPPED):
            continue
        if stype == VARIANT:  # any value: JSON text as is, the rest serialized
            variants.append(name)
            continue
        names.append(name)
        fields.append(pa.field(name, _ARROW[stype][0]))
    n = len(rows)
    arrays: dict[str, pa.Array] = {
        SCHEMA_COLUMN.upper(): pa.array([key[0]] * n, pa.string()),
        TABLE_COLUMN.upper(): pa.array([key[1]] * n, pa.string()),
    }
    values = [r.values for r in rows]
    try:
        struct = pa.array(values, pa.struct(fields))
        children: list[pa.Array] = struct.flatten()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        children = [_column_of(values, name, stage_types[name]) for name in names]
    for name, array in zip(names, children, strict=True):
        arrays[name.upper()] = array
    for name in variants:
        arrays[name.upper()] = pa.array(
            [
                v if v is None or type(v) is JsonText else _to_variant(v)
                for v in (r.get(name) for r in values)
            ],
            pa.string(),
        )
    if UNMAPPED in columns and UNMAPPED in stage_types:
        arrays[UNMAPPED.upper()] = pa.array(
            [
                None if not r.unmapped else orjson.dumps(r.unmapped, default=_json_default).decode()
                for r in rows
            ],
            pa.string(),
        )
    return pa.table(arrays)


def _column_of(values: list[dict[str, Any]], name: str, stype: str) -> pa.Array:
    """One column, converting values that are not of the staged type already."""
    arrow_type, convert = _ARROW[stype]
    raw = [v.get(name) for v in values]
    try:
        return pa.array(raw, arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    converted: list[Any]
    if stype == VARCHAR:
        converted = [v if v is None or type(v) is str else to_text(v) for v in raw]
    elif stype == TIMESTAMP:
        converted = [v if v is None or type(v) is datetime else convert(v) for v in raw]
    else:
        converted = [convert(v) for v in raw]
    return pa.array(converted, arrow_type)
