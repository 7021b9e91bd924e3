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
    NUMBER: (pa.string(), to_text),
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
            stage_type = typ if typ in _ARROW and typ != NUMBER else VARCHAR
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
    tables = []
    for key, rows in groups.items():
        arrays: dict[str, pa.Array] = {
            SCHEMA_COLUMN.upper(): pa.array([key[0]] * len(rows), pa.string()),
            TABLE_COLUMN.upper(): pa.array([key[1]] * len(rows), pa.string()),
        }
        for name in columns[key]:
            stype = stage_types.get(name)
            if stype is None or name in (SCHEMA_COLUMN, TABLE_COLUMN):
                continue
            if name == UNMAPPED:
                values: list[Any] = [
                    None
                    if not r.unmapped
                    else orjson.dumps(r.unmapped, default=_json_default).decode()
                    for r in rows
                ]
                arrays[name.upper()] = pa.array(values, pa.string())
                continue
            arrow_type, convert = _ARROW[stype]
            raw = [r.values.get(name) for r in rows]
            if stype == VARCHAR:
                values = [v if v is None or type(v) is str else to_text(v) for v in raw]
            elif stype == TIMESTAMP:
                values = [v if v is None or type(v) is datetime else convert(v) for v in raw]
            else:
                values = [convert(v) for v in raw]
            arrays[name.upper()] = pa.array(values, arrow_type)
        tables.append(pa.table(arrays))
    if not tables:
        return 0
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    pq.write_table(table, path, compression="snappy")
    return table.num_rows
