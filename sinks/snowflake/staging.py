"""The Parquet file of one flush: every row of every table, one column per distinct column name.

All tables of a flush share one staged file and one staging table (columns: the union of their
columns, plus ``_segflow_schema``/``_segflow_table`` saying where a row goes). A column keeps its
warehouse type when every table agrees on it, else it is staged as text and cast on insert.

One event is staged once (`stage_units`): its row of its own table (the per-event table of a
track, pages, identifies, ...) carries flags saying that it feeds tracks and audit_log as well,
the tracks row's ``_unmapped`` and the audit document in columns of their own. An event whose
rows cannot share one staged row (schema evolution moved a value in one of them only) is staged
as separate rows, so every table still gets exactly the row it would get on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate, islice
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.timestamps import parse_timestamp
from sinks.snowflake.rows import JsonText, TableRow
from sinks.snowflake.tables import (
    AUDIT_LOG,
    BOOLEAN,
    FLOAT,
    LOAD_ID_COLUMN,
    LOAD_TIME_COLUMNS,
    NUMBER,
    SCHEMA_CHANGES,
    TIMESTAMP,
    VARCHAR,
    VARIANT,
    Kind,
    fixed_columns,
)

SCHEMA_COLUMN = "_segflow_schema"
TABLE_COLUMN = "_segflow_table"
UNMAPPED = "_unmapped"
TRACKS = "tracks"
TRACKS_FLAG = "_segflow_tracks"  # the staged row feeds tracks
AUDIT_FLAG = "_segflow_audit"  # the staged row feeds audit_log
TRACKS_UNMAPPED = "_segflow_tracks_unmapped"  # tracks' _unmapped
AUDIT_TYPE = "_segflow_audit_type"  # audit_log's type
AUDIT_PAYLOAD = "_segflow_audit_payload"  # audit_log's payload
TRACKS_RENAMES: dict[str, str] = {UNMAPPED: TRACKS_UNMAPPED}
AUDIT_RENAMES: dict[str, str] = {"type": AUDIT_TYPE, "payload": AUDIT_PAYLOAD}

TableKey = tuple[str, str]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_text(value: Any) -> str | None:
    """A value as the text Snowflake casts into any of our column types."""
    if value is None or type(value) is str:
        return value
    if type(value) is bytes:  # a JSON document (rows.TableRow)
        return value.decode()
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
    if type(value) is bytes:  # a JSON document (rows.TableRow)
        return value.decode()
    return orjson.dumps(value, default=_json_default).decode()


_MAX_TEXT_BYTES = 2**31 - 1  # what one string array's 32-bit offsets address


def _variant_array(values: list[Any]) -> pa.Array:
    """VARIANT values as JSON text; JSON documents (JsonText, UTF-8 bytes) pass through
    unchanged (pyarrow takes bytes as UTF-8 text, checked). A column of documents as bytes only
    (audit payloads, which orjson wrote: valid UTF-8) is laid out as one buffer and its offsets,
    without converting or checking each document again."""
    texts: list[Any] = [
        v if v is None or type(v) is JsonText or type(v) is bytes else _to_variant(v)
        for v in values
    ]
    if texts and all(type(t) is bytes for t in texts):
        data = b"".join(texts)
        if len(data) <= _MAX_TEXT_BYTES:
            offsets = pa.array(accumulate(map(len, texts), initial=0), pa.int32())
            return pa.StringArray.from_buffers(len(texts), offsets.buffers()[1], pa.py_buffer(data))
    return pa.array(texts, pa.string())


def _typed_columns(
    values: list[dict[str, Any]],
    fields: list[pa.Field],
    names: list[str],
    stage_types: Mapping[str, str],
) -> dict[str, pa.Array]:
    """Upper-cased column -> array, built by pyarrow in one pass; per column where it refuses."""
    try:
        children: list[pa.Array] = pa.array(values, pa.struct(fields)).flatten()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        children = [_column_of(values, name, stage_types[name]) for name in names]
    return {name.upper(): array for name, array in zip(names, children, strict=True)}


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


@dataclass(slots=True)
class StagedUnit:
    """The rows of one event that share one staged row: its own table's row (`primary`), its
    tracks row and its audit_log row, each optional."""

    schema: str
    primary: TableRow | None = None
    tracks: TableRow | None = None
    audit: TableRow | None = None

    @property
    def row(self) -> TableRow:
        """The row whose values fill the staged row's columns."""
        row = self.primary or self.tracks or self.audit
        assert row is not None
        return row


def _event_of(row: TableRow) -> tuple[Any, ...]:
    v = row.values
    return (
        row.message_id,
        v.get("_segflow_offset"),
        v.get("_segflow_partition"),
        v.get("_segflow_topic"),
        row.schema,
    )


def _shares_tracks(row: TableRow, tracks: TableRow, tracks_columns: frozenset[str]) -> bool:
    """Can the tracks row be loaded from `row`'s staged row? Every value of the tracks row is
    the same in `row`, and `row` holds no value for a tracks column the tracks row lacks (schema
    evolution may have moved a value out of one of them only)."""
    have = row.values
    return tracks.values.items() <= have.items() and (
        have.keys() - tracks.values.keys()
    ).isdisjoint(tracks_columns)


def stage_units(
    rows: Iterable[TableRow], columns: Mapping[TableKey, Mapping[str, str]]
) -> list[StagedUnit]:
    """Rows of a flush -> staged rows: an event's tracks, own-table and audit_log rows (which
    `rows.event_rows` makes one after the other, from the same values) share one when their
    values allow it, else stand alone.

    An audit_log row holds only fixed columns, which every event table has with the same values
    and which evolution never moves; it shares its event's staged row unless audit_log has
    columns of its own beyond those (made by someone else), in which case it stands alone."""
    units: list[StagedUnit] = []
    tracks_cols: dict[str, frozenset[str]] = {}
    audit_shares: dict[str, bool] = {}
    audit_fixed = frozenset(fixed_columns(AUDIT_LOG))

    last: StagedUnit | None = None
    last_row: TableRow | None = None  # the row `last` was made for
    last_event: tuple[Any, ...] | None = None  # its _event_of, when needed
    for row in rows:
        table = row.table
        if row.kind is not Kind.APPEND or table == SCHEMA_CHANGES:
            units.append(StagedUnit(row.schema, primary=row))
            last = None
            continue
        same = False
        if last is not None:
            assert last_row is not None
            # made by event_rows with the rows of `last`: the same event (no _event_of needed)
            made_with = row.made_with
            same = made_with is not None and (
                made_with is last_row or made_with is last.primary or made_with is last.tracks
            )
            # another message id is another event (_event_of leads with it): not compared
            if not same and row.message_id == last_row.message_id:
                if last_event is None:
                    last_event = _event_of(last_row)
                event = _event_of(row)
                same = event == last_event and event[1] is not None
        if last is not None and same:
            schema = row.schema
            if table == AUDIT_LOG:
                shares = audit_shares.get(schema)
                if shares is None:
                    shares = audit_shares[schema] = (
                        frozenset(columns.get((schema, AUDIT_LOG), audit_fixed)) <= audit_fixed
                    )
                if shares and last.audit is None:
                    last.audit = row
                    continue
            elif table != TRACKS and last.primary is None and last.audit is None:
                cols = tracks_cols.get(schema)
                if cols is None:
                    cols = tracks_cols[schema] = frozenset(columns.get((schema, TRACKS), {}))
                tracks = last.tracks
                assert tracks is not None
                if row.made_with is tracks:
                    # its values are the tracks row's, its own keys appended (rows.TableRow)
                    shares = cols.isdisjoint(islice(row.values, len(tracks.values), None))
                else:
                    shares = _shares_tracks(row, tracks, cols)
                if shares:
                    last.primary = row
                    continue
        if table == TRACKS:
            last = StagedUnit(row.schema, None, row)
        elif table == AUDIT_LOG:
            last = StagedUnit(row.schema, None, None, row)
        else:
            last = StagedUnit(row.schema, row)
        last_row = row
        last_event = None
        units.append(last)
    return units


def unit_stage_types(
    tables: Iterable[TableKey], columns: Mapping[TableKey, Mapping[str, str]]
) -> dict[str, str]:
    """`staged_columns` for staged units: tracks' _unmapped and audit_log's type and payload
    are staged in columns of their own, beside the two flags."""
    adjusted: dict[TableKey, Mapping[str, str]] = {}
    for key in tables:
        cols = columns[key]
        skip = AUDIT_RENAMES if key[1] == AUDIT_LOG else TRACKS_RENAMES if key[1] == TRACKS else {}
        adjusted[key] = {n: t for n, t in cols.items() if n not in skip} if skip else cols
    out = staged_columns(adjusted.keys(), adjusted)
    out.update(
        {
            TRACKS_FLAG: BOOLEAN,
            AUDIT_FLAG: BOOLEAN,
            TRACKS_UNMAPPED: VARIANT,
            AUDIT_TYPE: VARCHAR,
            AUDIT_PAYLOAD: VARIANT,
        }
    )
    return out


_SPECIAL = frozenset({SCHEMA_COLUMN, TABLE_COLUMN, UNMAPPED, TRACKS_FLAG, AUDIT_FLAG})


def write_units(
    path: Path,
    units: Sequence[StagedUnit],
    columns: Mapping[TableKey, Mapping[str, str]],
    stage_types: Mapping[str, str],
) -> int:
    """Write one staged row per unit to one Parquet file with every column of `stage_types`
    (upper-case names). Returns the row count."""
    groups: dict[tuple[str, str | None, bool, bool], list[StagedUnit]] = {}
    for u in units:
        key = (
            u.schema,
            u.primary.table if u.primary else None,
            u.tracks is not None,
            u.audit is not None,
        )
        groups.setdefault(key, []).append(u)
    tables: list[pa.Table] = []
    for (schema, table, tracks, audit), members in groups.items():
        names: dict[str, None] = {}
        if table is not None:
            names.update(dict.fromkeys(columns[(schema, table)]))
        if tracks:
            names.update(dict.fromkeys(n for n in columns[(schema, TRACKS)] if n != UNMAPPED))
        if audit:
            names.update(
                dict.fromkeys(n for n in columns[(schema, AUDIT_LOG)] if n not in AUDIT_RENAMES)
            )
        tables.append(_unit_table(schema, table, tracks, audit, members, names, stage_types))
    if not tables:
        return 0
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    for name, stype in stage_types.items():
        if name.upper() not in table.column_names:
            arrow_type = pa.bool_() if stype == BOOLEAN else _ARROW.get(stype, _ARROW[VARCHAR])[0]
            table = table.append_column(name.upper(), pa.nulls(table.num_rows, arrow_type))
    # no column statistics: COPY reads every row, nothing prunes by them
    pq.write_table(table, path, compression="snappy", write_statistics=False)
    return table.num_rows


def _unit_table(
    schema: str,
    table: str | None,
    tracks: bool,
    audit: bool,
    units: list[StagedUnit],
    columns: Iterable[str],
    stage_types: Mapping[str, str],
) -> pa.Table:
    names: list[str] = []
    fields: list[pa.Field] = []
    variants: list[str] = []
    for name in columns:
        stype = stage_types.get(name)
        if stype is None or name in _SPECIAL:
            continue
        if stype == VARIANT:
            variants.append(name)
            continue
        names.append(name)
        fields.append(pa.field(name, _ARROW[stype][0]))
    n = len(units)
    arrays: dict[str, pa.Array] = {
        SCHEMA_COLUMN.upper(): pa.array([schema] * n, pa.string()),
        TABLE_COLUMN.upper(): pa.array([table] * n, pa.string()),
        TRACKS_FLAG.upper(): pa.array([tracks] * n, pa.bool_()),
        AUDIT_FLAG.upper(): pa.array([audit] * n, pa.bool_()),
    }
    values = [u.row.values for u in units]
    arrays.update(_typed_columns(values, fields, names, stage_types))
    for name in variants:
        arrays[name.upper()] = _variant_array([r.get(name) for r in values])
    if table is not None and UNMAPPED in stage_types:
        arrays[UNMAPPED.upper()] = _unmapped_array([u.primary for u in units])
    if tracks:
        arrays[TRACKS_UNMAPPED.upper()] = _unmapped_array([u.tracks for u in units])
    if audit:
        docs = [u.audit.values for u in units if u.audit is not None]
        arrays[AUDIT_TYPE.upper()] = pa.array([d.get("type") for d in docs], pa.string())
        arrays[AUDIT_PAYLOAD.upper()] = _variant_array([d.get("payload") for d in docs])
    return pa.table(arrays)


def _unmapped_array(rows: Sequence[TableRow | None]) -> pa.Array:
    return pa.array(
        [
            None
            if r is None or not r.unmapped
            else orjson.dumps(r.unmapped, default=_json_default).decode()
            for r in rows
        ],
        pa.string(),
    )
