"""DDL text: schemas, tables, added and widened columns, the staging table. Pure.

Identifiers are upper-cased and double-quoted, which is exactly what Snowflake makes of the
unquoted snake_case names Segment's schema uses, so `select context_ip from web.tracks` works.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from schemas.naming import cut_identifier, fit_identifier
from schemas.snowflake_limits import MAX_IDENTIFIER_LENGTH
from sinks.snowflake.tables import NUMBER

# A widening's twin is the column's name and this suffix. No generated column ends so (snake
# case never makes "__" before a letter), so a twin is told by its suffix alone.
WIDEN_SUFFIX = "__segflow_widened"
_TWIN_ROOM = MAX_IDENTIFIER_LENGTH - len(WIDEN_SUFFIX)


def quote(name: str) -> str:
    """A Snowflake identifier for a snake_case name: upper-case, quoted."""
    return '"' + name.upper().replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}"


def table_ref(name: str) -> str:
    """A table name, schema-qualified ("schema.table") or not, as SQL."""
    schema, dot, table = name.rpartition(".")
    return qualified(schema, table) if dot else quote(name)


def sql_type(column_type: str) -> str:
    return "NUMBER(38,0)" if column_type == NUMBER else column_type


def create_schema(schema: str) -> str:
    return f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}"


def create_table(schema: str, table: str, columns: Mapping[str, str]) -> str:
    cols = ", ".join(f"{quote(n)} {sql_type(t)}" for n, t in columns.items())
    return f"CREATE TABLE IF NOT EXISTS {qualified(schema, table)} ({cols})"


def add_column(schema: str, table: str, column: str, column_type: str) -> str:
    return (
        f"ALTER TABLE {qualified(schema, table)} ADD COLUMN IF NOT EXISTS "
        f"{quote(column)} {sql_type(column_type)}"
    )


def twin_name(column: str) -> str:
    """The FLOAT twin a widening of `column` adds: `column` and `WIDEN_SUFFIX`, at most 254
    characters; a column too long for that is cut with a hash of its name first (then the twin
    is exactly 255 characters long, which is how a cut twin is told from one that is not)."""
    if len(column) < _TWIN_ROOM:
        return column + WIDEN_SUFFIX
    return cut_identifier(column, _TWIN_ROOM) + WIDEN_SUFFIX


def widened_column(twin: str, columns: Collection[str]) -> str | None:
    """The column a twin found in a table was made for, or None. A twin that was not cut names
    it (the name before the suffix); a cut twin is matched against the table's `columns`, so
    it is None when its column is gone (a widening interrupted between its drop and its rename
    of a column of over 237 characters: the name cannot be told from the twin)."""
    if not twin.endswith(WIDEN_SUFFIX):
        return None
    if len(twin) < MAX_IDENTIFIER_LENGTH:
        return twin[: -len(WIDEN_SUFFIX)]
    return next((c for c in columns if c != twin and twin_name(c) == twin), None)


def widen_steps(schema: str, table: str, column: str) -> list[str]:
    """NUMBER -> FLOAT. Snowflake cannot change a column's type from NUMBER to FLOAT, so: add a
    FLOAT twin (`twin_name`), copy, drop the old column, rename the twin. Every step is safe to
    redo, so an interrupted widening finishes on the next attempt (the loader's
    `_repair_widenings`, which finds the column by `widened_column`)."""
    t = qualified(schema, table)
    twin = quote(twin_name(column))
    return [
        f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {twin} FLOAT",
        f"UPDATE {t} SET {twin} = {quote(column)}::FLOAT WHERE {twin} IS NULL",
        f"ALTER TABLE {t} DROP COLUMN IF EXISTS {quote(column)}",
        f"ALTER TABLE {t} RENAME COLUMN {twin} TO {quote(column)}",
    ]


def finish_widen(schema: str, table: str, column: str) -> str:
    """The last step alone: a twin left behind after its original was dropped."""
    return widen_steps(schema, table, column)[-1]


def staging_table(schema: str, name: str) -> str:
    """A staging table ("schema.name" for `table_ref`), its name fitted to Snowflake's
    identifier length by the naming rule."""
    return f"{schema}.{fit_identifier(name)}"


def create_staging(table: str, columns: Mapping[str, str]) -> str:
    """A per-process staging table, (re-)created empty (transient: no fail-safe)."""
    cols = ", ".join(f"{quote(n)} {sql_type(t)}" for n, t in columns.items())
    return f"CREATE OR REPLACE TRANSIENT TABLE {table_ref(table)} ({cols})"


def create_stage(schema: str, stage: str) -> str:
    return f"CREATE STAGE IF NOT EXISTS {qualified(schema, stage)}"


def put_file(local_path: str, schema: str, stage: str, folder: str) -> str:
    return (
        f"PUT 'file://{local_path}' @{qualified(schema, stage)}/{folder}/ "
        "AUTO_COMPRESS=FALSE OVERWRITE=TRUE"
    )


def copy_into_staging(table: str, schema: str, stage: str, folder: str) -> str:
    return (
        f"COPY INTO {table_ref(table)} FROM @{qualified(schema, stage)}/{folder}/ "
        "FILE_FORMAT=(TYPE=PARQUET) MATCH_BY_COLUMN_NAME=CASE_SENSITIVE PURGE=TRUE"
    )


def columns_query() -> str:
    """Column layout of every table of one schema (bind: schema name upper-case)."""
    return (
        "SELECT table_name, column_name, data_type, numeric_scale "
        "FROM information_schema.columns WHERE table_schema = ? "
        "ORDER BY table_name, ordinal_position"
    )
