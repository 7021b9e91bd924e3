"""The tables-per-schema cap, as a pure function (the columns-per-table cap is evolution.plan's).

A schema takes at most `max_tables` tables: the rows of a per-event table beyond it are folded
into their event's tracks row, their values into its `_unmapped`, recorded as ``table_limit``.
Segment's and segflow's own tables are never capped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.naming import RESERVED_TABLES
from sinks.snowflake.evolution import SchemaChange, TableKey
from sinks.snowflake.rows import TableRow
from sinks.snowflake.staging import TRACKS
from sinks.snowflake.tables import SCHEMA_CHANGES, Kind, fixed_columns

_UNCAPPED = RESERVED_TABLES | {SCHEMA_CHANGES}


def fold_capped_tables(
    rows: list[TableRow], known: Mapping[TableKey, Mapping[str, str]], max_tables: int
) -> tuple[list[TableRow], list[SchemaChange]]:
    """Rows of per-event tables a schema has no room for (it holds `max_tables` tables, counted
    from `known` and the new tables allowed before) folded into their event's tracks row: the
    values beyond the fixed columns go to that row's `_unmapped`. Returns the rows and one
    ``table_limit`` change per refused table. The input rows are not changed. The count keeps a
    place for `_segflow_schema_changes`, where the refusal is recorded."""
    tables: dict[str, int] = {}
    for schema, _table in known:
        tables[schema] = tables.get(schema, 0) + 1
    for schema in {r.schema for r in rows}:  # a place kept for where a cap is recorded
        if (schema, SCHEMA_CHANGES) not in known:
            tables[schema] = tables.get(schema, 0) + 1
    allowed: dict[TableKey, bool] = {}
    out: list[TableRow] = []
    tracks_at: dict[tuple[str, str], int] = {}
    refused: dict[TableKey, list[Any]] = {}
    for row in rows:
        key = (row.schema, row.table)
        if row.table == TRACKS:
            tracks_at[(row.schema, row.message_id)] = len(out)
        ok = allowed.get(key)
        if ok is None:
            ok = key in known or row.table in _UNCAPPED or tables.get(row.schema, 0) < max_tables
            if ok and key not in known:
                tables[row.schema] = tables.get(row.schema, 0) + 1
            allowed[key] = ok
        if ok:
            out.append(row)
            continue
        fixed = fixed_columns(row.table)
        moved = {k: v for k, v in row.values.items() if k not in fixed and v is not None}
        moved.update(row.unmapped or {})
        at = tracks_at.get((row.schema, row.message_id))
        if at is not None:
            t = out[at]
            unmapped = {**(t.unmapped or {}), **moved} or None
            out[at] = TableRow(t.schema, t.table, t.kind, t.values, unmapped, t.message_id)
        else:  # no tracks row beside it: it becomes one
            base = fixed_columns(TRACKS)
            values = {k: v for k, v in row.values.items() if k in base}
            out.append(
                TableRow(row.schema, TRACKS, Kind.APPEND, values, moved or None, row.message_id)
            )
        entry = refused.setdefault(key, [0, row.message_id])
        entry[0] += 1
    changes = [
        SchemaChange(schema, table, "", "table_limit", None, None, n, example)
        for (schema, table), (n, example) in refused.items()
    ]
    return out, changes
