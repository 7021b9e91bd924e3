"""DML text of a flush: set-based statements from the staging table into the targets. Pure.

Everything here runs inside one transaction and is valid Snowflake SQL that the emulator runs
too (no MERGE: the emulator cannot MERGE inside a transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    value: Callable[[str, str], str] | None = None,
) -> tuple[list[str], list[str], int]:
    """(target columns, select expressions, number of load-time binds among them). `value`:
    (column, type) -> its expression, instead of the staged value cast, for the data
    columns."""
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
            exprs.append(_cast(f"s.{quote(name)}", typ, staged.get(name)))
    return names, exprs, binds


def _where_staged() -> str:
    """The staged rows of one table: schema and table (binds: both)."""
    return f"s.{quote(SCHEMA_COLUMN)} = ? AND s.{quote(TABLE_COLUMN)} = ?"


def _insert_select(
    schema: str, table: str, names: list[str], exprs: list[str], staging: str, rest: str
) -> str:
    """INSERT INTO the table (names) SELECT exprs FROM the staging table aliased s, then `rest`
    (joins, WHERE, QUALIFY)."""
    return (
        f"INSERT INTO {qualified(schema, table)} ({', '.join(names)}) "
        f"SELECT {', '.join(exprs)} FROM {table_ref(staging)} s {rest}"
    )


@dataclass(frozen=True)
class AppendTarget:
    """One append table of a multi-table insert (`insert_all_new`): its columns, the time
    column its idempotence window is measured on, and how its staged rows are found: by the
    staged table column, or by a flag (tracks and audit_log, staged on their events' rows,
    with some columns staged under other names: `renames`, target column -> staged column)."""

    table: str
    columns: Mapping[str, str]
    lookback_column: str = "received_at"
    flag: str | None = None
    renames: Mapping[str, str] | None = None


# Names of the subquery's own columns in a multi-table insert: "#" is in no column name segflow
# makes (naming keeps letters, digits and underscores), so they cannot clash with `s.*`.
_LOAD_TS_ALIAS = '"#LOAD_TS"'
_LOAD_ID_ALIAS = '"#LOAD_ID"'


def name_literal(name: str) -> str:
    """A schema or table name as a string literal. Names are word characters (schemas.naming),
    so no backslash, whose escaping Snowflake and the emulator's DuckDB read differently."""
    if "\\" in name:
        raise ValueError(f"not a table name segflow makes: {name!r}")
    return "'" + name.replace("'", "''") + "'"


def insert_all_new(
    staging: str,
    schema: str,
    targets: Sequence[AppendTarget],
    staged: Mapping[str, str],
    lookback: bool,
) -> tuple[str, bool, bool]:
    """One multi-table insert (Snowflake's ``INSERT ALL``) of the staged rows of `targets`, all
    append tables of `schema`: each staged row goes into its table when its id is not there
    (within the lookback when `lookback`). The staged rows of one table hold each id once (the
    loader keeps the first record of an id: `rows.first_per_id`). One statement instead of one
    per table: a flush of many events holds a table per event name, and each statement costs
    a round trip and a compilation (bench/results/cost-per-event.md, 2026-12-07, three).

    The subquery reads the staging table once (`s.*`), with the typed values the tables need
    where the staged ones do not fit as they are (``"#E<n>"``, each distinct expression once),
    and for each target the ids it already holds among the staged ones (``"#N<k>"``: a LEFT JOIN
    of the DISTINCT ids the table holds among the staged ones, so a staged row matches at most
    once whatever the table holds; the target is probed with the staged ids, as the single-table
    anti-join it replaces was, rather than hashed whole: bench/results/sink-tuning.md). Each INTO
    clause names source columns only (Snowflake's rule for VALUES in a multi-table insert).

    Returns (sql, whether it binds the load time, whether it binds the load id): its binds are,
    in order, the load time and the load id (when bound), one lower bound per target (when
    `lookback`), then the schema."""
    exprs: dict[str, str] = {}  # expression -> alias
    has_load_ts = has_load_id = False
    intos: list[str] = []
    joins: list[str] = []
    select = ["s.*"]
    for k, target in enumerate(targets, 1):
        names: list[str] = []
        refs: list[str] = []
        for name, typ in target.columns.items():
            names.append(quote(name))
            if name in LOAD_TIME_COLUMNS:
                has_load_ts = True
                refs.append(_LOAD_TS_ALIAS)
                continue
            if name == LOAD_ID_COLUMN:
                has_load_id = True
                refs.append(_LOAD_ID_ALIAS)
                continue
            source = target.renames.get(name, name) if target.renames else name
            column = quote(source)
            expr = _cast(f"s.{column}", typ, staged.get(source))
            if expr == f"s.{column}":
                refs.append(column)
            elif expr == "NULL":
                refs.append("NULL")
            else:
                alias = exprs.get(expr)
                if alias is None:
                    alias = exprs[expr] = f'"#E{len(exprs) + 1}"'
                    select.append(f"{expr} AS {alias}")
                refs.append(alias)
        held = f'"#N{k}"'
        select.append(f'n{k}."ID" AS {held}')
        window = f" AND t.{quote(target.lookback_column)} >= {LOAD_TS}" if lookback else ""
        joins.append(
            f'LEFT JOIN (SELECT DISTINCT t."ID" FROM {qualified(schema, target.table)} t '
            f'WHERE t."ID" IN (SELECT "ID" FROM {table_ref(staging)}){window}) n{k} '
            f'ON n{k}."ID" = s."ID"'
        )
        if target.flag is not None:
            mine = quote(target.flag)
        else:
            mine = f"{quote(TABLE_COLUMN)} = {name_literal(target.table)}"
        intos.append(
            f"WHEN {mine} AND {held} IS NULL THEN INTO {qualified(schema, target.table)} "
            f"({', '.join(names)}) VALUES ({', '.join(refs)})"
        )
    head: list[str] = []
    if has_load_ts:
        head.append(f"{LOAD_TS} AS {_LOAD_TS_ALIAS}")
    if has_load_id:
        head.append(f"? AS {_LOAD_ID_ALIAS}")
    sql = (
        f"INSERT ALL {' '.join(intos)} "
        f"SELECT {', '.join([*select[:1], *head, *select[1:]])} FROM {table_ref(staging)} s "
        f"{' '.join(joins)} WHERE s.{quote(SCHEMA_COLUMN)} = ?"
    )
    return sql, has_load_ts, has_load_id


_INSERTED_INTO = "number of rows inserted into "


def inserted_per_table(
    targets: Sequence[AppendTarget], names: Sequence[str], row: Sequence[Any] | None
) -> list[int] | None:
    """The rows a multi-table insert put into each of `targets`, from its answer: one row
    (`row`), a column per target table named "number of rows inserted into <TABLE>"
    (`names`). By name when every target is named; else by position when there is a column per
    target (the answer follows the INTO clauses' order); else None (the caller counts the total
    only)."""
    counts = [int(v or 0) for v in row or ()]
    by_name = {
        n[len(_INSERTED_INTO) :].rsplit(".", 1)[-1].strip('"').upper(): c
        for n, c in zip(names, counts, strict=False)
        if n.lower().startswith(_INSERTED_INTO)
    }
    if all(t.table.upper() in by_name for t in targets):
        return [by_name[t.table.upper()] for t in targets]
    if len(counts) == len(targets):
        return counts
    return None


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
