"""DDL text: schemas, tables, added and widened columns, the staging table. Pure.

Identifiers are upper-cased and double-quoted, which is exactly what Snowflake makes of the
unquoted snake_case names Segment's schema uses, so `select context_ip from web.tracks` works.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from schemas.naming import cut_identifier, fit_identifier
from schemas.snowflake_limits import MAX_IDENTIFIER_LENGTH
from sinks.snowflake.tables import BOOLEAN, FLOAT, NUMBER, TIMESTAMP, VARCHAR

# A widening adds a twin of the new type (the column's name and WIDEN_SUFFIX) and sets the old
# column aside under the column's name and RETIRED_SUFFIX until its values are copied. No
# generated column ends so (snake case never makes "__" before a letter), so both are told by
# their suffix alone. The suffixes have the same length, so a name is cut the same way for both.
WIDEN_SUFFIX = "__segflow_widened"
RETIRED_SUFFIX = "__segflow_retired"
_TWIN_ROOM = MAX_IDENTIFIER_LENGTH - len(WIDEN_SUFFIX)
assert len(RETIRED_SUFFIX) == len(WIDEN_SUFFIX)

_TS_TEXT = 'YYYY-MM-DD"T"HH24:MI:SS.FF3'
WIDEN_CASTS: dict[tuple[str, str], str] = {
    (NUMBER, FLOAT): "{src}::FLOAT",
    (NUMBER, VARCHAR): "{src}::VARCHAR",
    (FLOAT, VARCHAR): "{src}::VARCHAR",
    (BOOLEAN, VARCHAR): "IFF({src}, 'true', 'false')",
    (TIMESTAMP, VARCHAR): f"TO_VARCHAR(CONVERT_TIMEZONE('UTC', {{src}}), '{_TS_TEXT}') || 'Z'",
}
"""The ladder's steps (evolution.LADDER) -> how a value of the old type is written in the new:
integers as their digits; floats as the warehouse prints them; booleans `true` / `false` (as
the sink writes JSON booleans into text columns); timestamps in UTC as ISO 8601 with
milliseconds and `Z` (`2026-01-05T12:00:00.123Z`, the form Segment's libraries send)."""


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


def _aside(column: str, suffix: str) -> str:
    if len(column) < _TWIN_ROOM:
        return column + suffix
    return cut_identifier(column, _TWIN_ROOM) + suffix


def twin_name(column: str) -> str:
    """The twin a widening of `column` adds: `column` and `WIDEN_SUFFIX`, at most 254
    characters; a column too long for that is cut with a hash of its name first (then the twin
    is exactly 255 characters long, which is how a cut twin is told from one that is not)."""
    return _aside(column, WIDEN_SUFFIX)


def retired_name(column: str) -> str:
    """The name a widening gives the old column while its values are copied (as `twin_name`,
    with `RETIRED_SUFFIX`)."""
    return _aside(column, RETIRED_SUFFIX)


def widened_column(name: str, columns: Collection[str]) -> str | None:
    """The column a twin or retired column found in a table belongs to, or None. A name that
    was not cut tells it (the name before the suffix); a cut one is matched against the
    table's `columns`, so it is None when its column is not there (a widening interrupted
    between its two renames of a column of over 237 characters: the name cannot be told)."""
    suffix = next((s for s in (WIDEN_SUFFIX, RETIRED_SUFFIX) if name.endswith(s)), None)
    if suffix is None:
        return None
    if len(name) < MAX_IDENTIFIER_LENGTH:
        return name[: -len(suffix)]
    return next((c for c in columns if c != name and _aside(c, suffix) == name), None)


def widen_cast(source: str, target: str, expr: str) -> str:
    """`expr`, a value of type `source`, as a value of type `target` (the ladder's cast; the
    warehouse's own cast for a pair off the ladder, as-is for the same type)."""
    if source == target:
        return expr
    template = WIDEN_CASTS.get((source, target))
    if template is None:
        return f"{expr}::{sql_type(target)}"
    return template.format(src=expr)


# The steps of a widening, by index (resuming starts at one of them).
ADD, COPY, RETIRE, SWAP, CATCH_UP, DROP = range(6)


def widen_steps(
    schema: str, table: str, column: str, source: str = NUMBER, target: str = FLOAT
) -> list[str]:
    """`column` from `source` to `target`. Snowflake cannot change a column's type (only a
    VARCHAR's length or a NUMBER's precision) and DDL commits by itself, so the column is
    rebuilt in steps that are each safe to redo: add a twin of the new type, copy the values
    into it, set the old column aside (`retired_name`), give the twin the column's name, copy
    what was written into the old column between the copy and the renames, drop the old
    column. The column is missing only between the two renames; a writer never writes into a
    column that is dropped before its values are copied. An interrupted widening is finished
    from the step the table's layout shows (widening.resume_steps)."""
    t = qualified(schema, table)
    col, twin, old = quote(column), quote(twin_name(column)), quote(retired_name(column))
    return [
        f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {twin} {sql_type(target)}",
        f"UPDATE {t} SET {twin} = {widen_cast(source, target, col)} "
        f"WHERE {twin} IS NULL AND {col} IS NOT NULL",
        f"ALTER TABLE {t} RENAME COLUMN {col} TO {old}",
        f"ALTER TABLE {t} RENAME COLUMN {twin} TO {col}",
        f"UPDATE {t} SET {col} = {widen_cast(source, target, old)} "
        f"WHERE {col} IS NULL AND {old} IS NOT NULL",
        f"ALTER TABLE {t} DROP COLUMN IF EXISTS {old}",
    ]


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
