"""DML text of a flush: set-based statements from the staging table into the targets. Pure.

Everything here runs inside one transaction and is valid Snowflake SQL that the emulator runs
too (no MERGE: the emulator cannot MERGE inside a transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sinks.snowflake.ddl import qualified, quote, sql_type, table_ref
from sinks.snowflake.staging import SCHEMA_COLUMN, TABLE_COLUMN
from sinks.snowflake.tables import (
    IDENTITY_MAP,
    LOAD_ID_COLUMN,
    LOAD_TIME_COLUMNS,
    TIMESTAMP,
    VARCHAR,
    VARIANT,
    merge_key,
)

LOAD_TS = "CAST(? AS TIMESTAMP_TZ)"


def _cast(expr: str, target: str, staged: str | None) -> str:
    if staged is None:
        return "NULL"
    if staged == target:
        return expr
    if target == VARIANT:
        return f"PARSE_JSON({expr})"
    if target == VARCHAR:
        return expr if staged == VARCHAR else f"{expr}::VARCHAR"
    return f"{expr}::{sql_type(target)}"


def _select_list(
    columns: Mapping[str, str],
    staged: Mapping[str, str],
    alias: str = "s",
    renames: Mapping[str, str] | None = None,
    value: Callable[[str, str], str] | None = None,
) -> tuple[list[str], list[str], int]:
    """(target columns, select expressions, number of load-time binds among them). `renames`:
    target column -> the staged column it is loaded from, where they differ. `value`: (column,
    type) -> its expression, instead of the staged value cast, for the data columns."""
    names: list[str] = []
    exprs: list[str] = []
    binds = 0
    for name, typ in columns.items():
        names.append(quote(name))
        if name in LOAD_TIME_COLUMNS:
            exprs.append(LOAD_TS)
            binds += 1
        elif name == LOAD_ID_COLUMN:
            exprs.append("?")
            binds += 1
        elif value is not None:
            exprs.append(value(name, typ))
        else:
            source = renames.get(name, name) if renames else name
            exprs.append(_cast(f"{alias}.{quote(source)}", typ, staged.get(source)))
    return names, exprs, binds


def _where_staged(alias: str = "s", flag: str | None = None) -> str:
    """The staged rows of one table: schema and table (binds: both), or schema and a flag
    column (bind: the schema)."""
    if flag is not None:
        return f"{alias}.{quote(SCHEMA_COLUMN)} = ? AND {alias}.{quote(flag)}"
    return f"{alias}.{quote(SCHEMA_COLUMN)} = ? AND {alias}.{quote(TABLE_COLUMN)} = ?"


def _insert_select(
    schema: str, table: str, names: list[str], exprs: list[str], staging: str, rest: str
) -> str:
    """INSERT INTO the table (names) SELECT exprs FROM the staging table aliased s, then `rest`
    (joins, WHERE, QUALIFY)."""
    return (
        f"INSERT INTO {qualified(schema, table)} ({', '.join(names)}) "
        f"SELECT {', '.join(exprs)} FROM {table_ref(staging)} s {rest}"
    )


def insert_new(
    staging: str,
    schema: str,
    table: str,
    columns: Mapping[str, str],
    staged: Mapping[str, str],
    lookback: bool,
    lookback_column: str = "received_at",
    *,
    flag: str | None = None,
    renames: Mapping[str, str] | None = None,
) -> tuple[str, int]:
    """Insert staged rows whose id is not in the table (within the lookback when `lookback`).
    The staged rows of one table hold each id once (the loader keeps the first record of an
    id: `rows.first_per_id`). Binds: load-time values, the lookback bound if any, then schema
    and table (only the schema with `flag`: the staged rows flagged so). `renames`: columns
    staged under other names.

    An anti-join (LEFT JOIN ... IS NULL) rather than NOT EXISTS: the same rows, and engines
    that build the join's hash table on the smaller side do so (the emulator's DuckDB, which
    hashes the whole target table for NOT EXISTS: bench/results/sink-tuning.md)."""
    names, exprs, binds = _select_list(columns, staged, renames=renames)
    window = f" AND t.{quote(lookback_column)} >= {LOAD_TS}" if lookback else ""
    rest = (
        f'LEFT JOIN {qualified(schema, table)} t ON t."ID" = s."ID"{window} '
        f'WHERE {_where_staged(flag=flag)} AND t."ID" IS NULL'
    )
    return _insert_select(schema, table, names, exprs, staging, rest), binds


def insert_plain(
    staging: str, schema: str, table: str, columns: Mapping[str, str], staged: Mapping[str, str]
) -> tuple[str, int]:
    names, exprs, binds = _select_list(columns, staged)
    return _insert_select(schema, table, names, exprs, staging, f"WHERE {_where_staged()}"), binds


def merge_insert(
    staging: str, schema: str, table: str, columns: Mapping[str, str], staged: Mapping[str, str]
) -> tuple[str, int]:
    """users/accounts, step 1: insert each staged profile merged with the row it replaces
    (newer received_at wins per column, the other side fills its gaps)."""
    target = qualified(schema, table)
    newer = 'u."ID" IS NULL OR s."RECEIVED_AT" >= u."RECEIVED_AT"'

    def merged(name: str, typ: str) -> str:
        if name == "id":
            return 's."ID"'
        if name == "received_at":
            return 'GREATEST(s."RECEIVED_AT", COALESCE(u."RECEIVED_AT", s."RECEIVED_AT"))'
        q = quote(name)
        new = _cast(f"s.{q}", typ, staged.get(name))
        return f"CASE WHEN {newer} THEN COALESCE({new}, u.{q}) ELSE COALESCE(u.{q}, {new}) END"

    names, exprs, binds = _select_list(columns, staged, value=merged)
    rest = (
        f'LEFT JOIN {target} u ON u."ID" = s."ID" '
        f"WHERE {_where_staged()} "
        'QUALIFY ROW_NUMBER() OVER (PARTITION BY s."ID" ORDER BY u."RECEIVED_AT" DESC) = 1'
    )
    return _insert_select(schema, table, names, exprs, staging, rest), binds


def delete_replaced(staging: str, schema: str, table: str) -> str:
    """users/accounts/identity_map: delete the rows of staged keys not written by this load.
    Binds: schema, table, load id."""
    key = merge_key(table)
    cols = ", ".join(f"s.{quote(k)}" for k in key)
    on = " AND ".join(f"t.{quote(k)} = k.{quote(k)}" for k in key)
    return (
        f"DELETE FROM {qualified(schema, table)} t USING "
        f"(SELECT DISTINCT {cols} FROM {table_ref(staging)} s WHERE {_where_staged()}) k "
        f"WHERE {on} AND t.{quote(LOAD_ID_COLUMN)} IS DISTINCT FROM ?"
    )


# The rows of a JSON array bound as one string: one short statement, whatever the count (Snowflake
# parses a list of thousands of binds, and the emulator far slower still).
_JSON_ROWS = "TABLE(FLATTEN(INPUT => PARSE_JSON(?))) f"


def select_links(schema: str) -> str:
    """identity_map: the links (rows naming another user) of the identifiers in a JSON array
    (one bind). Columns: identifier, identifier_type, canonical_user_id, linked_at."""
    return (
        'SELECT "IDENTIFIER", "IDENTIFIER_TYPE", "CANONICAL_USER_ID", "LINKED_AT" '
        f"FROM {qualified(schema, IDENTITY_MAP)} "
        f'WHERE "IDENTIFIER" IN (SELECT f.value::VARCHAR FROM {_JSON_ROWS}) '
        'AND "CANONICAL_USER_ID" IS NOT NULL AND "CANONICAL_USER_ID" <> "IDENTIFIER"'
    )


def repoint_users(schema: str) -> str:
    """identity_map: every row whose canonical user is one of a JSON array's [user, final
    user] pairs (each user once) names the final user instead, its updated_at the load time.
    One UPDATE ... FROM. Binds: the load time, the pairs' JSON."""
    return (
        f'UPDATE {qualified(schema, IDENTITY_MAP)} t SET "CANONICAL_USER_ID" = m."FINAL_USER_ID", '
        f'"UPDATED_AT" = {LOAD_TS} '
        'FROM (SELECT f.value[0]::VARCHAR AS "USER_ID", f.value[1]::VARCHAR AS "FINAL_USER_ID" '
        f"FROM {_JSON_ROWS}) m "
        'WHERE t."CANONICAL_USER_ID" = m."USER_ID"'
    )


def timestamp_bound_type() -> str:
    return TIMESTAMP
