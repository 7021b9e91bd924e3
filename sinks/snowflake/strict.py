"""Snowflake's rules enforced on a lenient warehouse: a checking wrapper of the connection.

The local emulator (DuckDB behind fakesnow) accepts names, sizes and values Snowflake refuses.
`StrictConnection` wraps a connector connection; every statement segflow sends through it is
checked first against Snowflake's documented limits (`schemas.snowflake_limits`, where each
limit's source is named), and a statement that breaks one is refused here, with the error code
Snowflake gives for it, before the emulator sees it. So the sink's misfit path, the operator
jobs and the tests behave on the emulator as they would on Snowflake.

It is on when `WarehouseSettings.strict_checks` says so (``SEGFLOW_SNOWFLAKE_STRICT``; unset:
on for the emulator account, off for a real account, which enforces the rules itself), and
`sinks.snowflake.session.login` applies it: every component that reaches the warehouse (the
sink, forget, reverse ETL, in-process or as a subprocess) is checked, and the tests cannot go
around it.

Each refusal is logged at ERROR (the rule, never the value) and reported to the caller's
`on_violation` (the sink counts `segflow_sink_strict_violations_total{rule}`), so a test sees
it even where the misfit path absorbs the error.

The rules checked (docs.snowflake.com pages in brackets) and the error raised:
- identifier length, quoted or not, at most 255 characters ["Identifier requirements"]: every
  identifier in the statement text outside string literals. SQLSTATE 42000, no error number
  (no documented number was found for it; classified fatal: names are segflow's to fit).
- statement text at most 1 MB ["Query limits"]: 42000 as above.
- columns per table at most `MAX_COLUMNS_PER_TABLE` (segflow's cap, see snowflake_limits):
  CREATE TABLE counts its column list; ADD COLUMN counts the table's columns in
  INFORMATION_SCHEMA first. 42000 as above.
- bound values: strings at most 16,777,216 bytes UTF-8 ["String & binary data types"] ->
  100082 (22000) "Max LOB size exceeded"; integers within 38 digits ["Numeric data types"] ->
  100046 (22003) "Number out of representable range".
- the Parquet file of a PUT (what COPY will load): string and binary values at most 16 MB ->
  100082; decimals of precision at most 38 -> 100046; timestamps within years 1-9999 ["Date &
  time data types"] -> 100035 (22007) "Timestamp is not recognized".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.snowflake_limits import (
    MAX_COLUMNS_PER_TABLE,
    MAX_IDENTIFIER_LENGTH,
    MAX_NUMBER_PRECISION,
    MAX_STATEMENT_BYTES,
    MAX_TIMESTAMP_YEAR,
    MAX_VARCHAR_BYTES,
    MIN_TIMESTAMP_YEAR,
)

logger = logging.getLogger(__name__)

OnViolation = Callable[[str], None]

# (errno, sqlstate) Snowflake answers for each data rule (sinks/snowflake/errors.py's sources)
LOB_SIZE = (100082, "22000")
NUMBER_RANGE = (100046, "22003")
TIMESTAMP_RANGE = (100035, "22007")
COMPILATION = (None, "42000")

_NUMBER_LIMIT = 10**MAX_NUMBER_PRECISION
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_TS_MIN = (datetime(MIN_TIMESTAMP_YEAR, 1, 1, tzinfo=UTC) - _EPOCH) // _US
_TS_MAX = (datetime(MAX_TIMESTAMP_YEAR, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // _US
_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0}


class StrictViolation(Exception):
    """A statement Snowflake would refuse: the rule broken and the code Snowflake answers."""

    def __init__(self, rule: str, detail: str, code: tuple[int | None, str]) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail
        self.errno, self.sqlstate = code


# -- the statement text ------------------------------------------------------------------------
_TOKEN = re.compile(
    r"'(?:[^'\\]|\\.|'')*'"  # string literal
    r"|\$\$.*?\$\$"  # dollar-quoted literal
    r'|"((?:[^"]|"")*)"'  # quoted identifier (group 1)
    r"|([A-Za-z_][A-Za-z0-9_$]*)",  # unquoted word (group 2)
    re.DOTALL,
)
_CREATE_TABLE = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TRANSIENT\s+|TEMPORARY\s+|TEMP\s+)?TABLE\s+"
    r"(?:IF\s+NOT\s+EXISTS\s+)?(?:\"(?:[^\"]|\"\")*\"\.)?\"(?:[^\"]|\"\")*\"\s*\((.*)\)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_ADD_COLUMN = re.compile(
    r'^\s*ALTER\s+TABLE\s+(?:"((?:[^"]|"")*)"\.)?"((?:[^"]|"")*)"\s+ADD\s+COLUMN\s+'
    r'(?:IF\s+NOT\s+EXISTS\s+)?"((?:[^"]|"")*)"',
    re.IGNORECASE | re.DOTALL,
)
_PUT = re.compile(r"^\s*PUT\s+'file://([^']+)'", re.IGNORECASE)


def check_text(sql: str) -> None:
    """Identifier lengths, statement size and CREATE TABLE's column count (pure)."""
    if len(sql) > MAX_STATEMENT_BYTES // 4 and len(sql.encode()) > MAX_STATEMENT_BYTES:
        raise StrictViolation(
            "statement_size", f"statement over {MAX_STATEMENT_BYTES} bytes", COMPILATION
        )
    for match in _TOKEN.finditer(sql):
        quoted, word = match.group(1), match.group(2)
        name = quoted.replace('""', '"') if quoted is not None else word
        if name is not None and len(name) > MAX_IDENTIFIER_LENGTH:
            raise StrictViolation(
                "identifier_length",
                f"identifier of {len(name)} characters (at most {MAX_IDENTIFIER_LENGTH})",
                COMPILATION,
            )
    create = _CREATE_TABLE.match(sql)
    if create is not None:
        columns = _top_level_items(create.group(1))
        if columns > MAX_COLUMNS_PER_TABLE:
            raise StrictViolation(
                "columns_per_table",
                f"CREATE TABLE with {columns} columns (at most {MAX_COLUMNS_PER_TABLE})",
                COMPILATION,
            )


def _top_level_items(text: str) -> int:
    """Comma-separated items of a list, not counting commas inside parentheses or quotes."""
    depth, items, quoted = 0, 1, False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            items += 1
    return items if text.strip() else 0


def check_binds(binds: Sequence[Any] | None) -> None:
    """Sizes of bound strings and the digits of bound integers (pure)."""
    for value in binds or ():
        if type(value) is str:
            if len(value) > MAX_VARCHAR_BYTES // 4 and len(value.encode()) > MAX_VARCHAR_BYTES:
                raise StrictViolation(
                    "varchar_size", f"bound string over {MAX_VARCHAR_BYTES} bytes", LOB_SIZE
                )
        elif type(value) is int and not -_NUMBER_LIMIT < value < _NUMBER_LIMIT:
            raise StrictViolation(
                "number_precision",
                f"bound integer over {MAX_NUMBER_PRECISION} digits",
                NUMBER_RANGE,
            )


def check_parquet(path: str) -> None:
    """What COPY would refuse in the file a PUT sends. Cheap: the footer says each column's
    types and uncompressed size; only timestamp columns, and text columns whose whole size
    could hold one value over the limit, are read."""
    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    meta = parquet.metadata
    sizes: dict[str, int] = {}
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        for i in range(row_group.num_columns):
            chunk = row_group.column(i)
            sizes[chunk.path_in_schema] = max(
                sizes.get(chunk.path_in_schema, 0), chunk.total_uncompressed_size
            )
    read: list[str] = []
    for field in schema:
        typ = field.type
        if pa.types.is_decimal(typ):
            check_arrow_column(field.name, pa.array([], typ))  # the type says it all
        elif pa.types.is_timestamp(typ) or (
            _is_text(typ) and sizes.get(field.name, 0) > MAX_VARCHAR_BYTES
        ):
            read.append(field.name)
    if read:
        table = parquet.read(columns=read)
        for name, column in zip(table.column_names, table.columns, strict=True):
            check_arrow_column(name, column)


def _is_text(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_binary(typ)


def check_arrow_column(name: str, column: pa.ChunkedArray | pa.Array) -> None:
    typ = column.type
    if _is_text(typ):
        if len(column) and column.null_count < len(column):
            longest = pc.max(pc.binary_length(column)).as_py()
            if longest is not None and longest > MAX_VARCHAR_BYTES:
                raise StrictViolation(
                    "varchar_size",
                    f"staged column {name} holds a value over {MAX_VARCHAR_BYTES} bytes",
                    LOB_SIZE,
                )
    elif pa.types.is_decimal(typ):
        if typ.precision > MAX_NUMBER_PRECISION:
            raise StrictViolation(
                "number_precision",
                f"staged column {name} of precision {typ.precision}",
                NUMBER_RANGE,
            )
    elif pa.types.is_timestamp(typ) and len(column) and column.null_count < len(column):
        bounds = pc.min_max(column.cast(pa.int64())).as_py()
        unit = _UNIT[typ.unit]
        low, high = bounds["min"], bounds["max"]
        if unit == 0:  # nanoseconds: int64 cannot reach year 0 or 10000
            return
        if low * unit < _TS_MIN or high * unit > _TS_MAX:
            raise StrictViolation(
                "timestamp_range",
                f"staged column {name} holds a time outside years "
                f"{MIN_TIMESTAMP_YEAR}-{MAX_TIMESTAMP_YEAR}",
                TIMESTAMP_RANGE,
            )


# -- the wrapper -------------------------------------------------------------------------------
def _to_connector_error(violation: StrictViolation) -> Exception:
    """The connector's own error type, with Snowflake's code for the rule (classify reads it)."""
    from snowflake.connector.errors import ProgrammingError

    return ProgrammingError(
        msg=f"strict check (Snowflake refuses this): {violation}",
        errno=violation.errno,
        sqlstate=violation.sqlstate,
        send_telemetry=False,
    )


class StrictCursor:
    """A cursor whose `execute` checks the statement first; everything else is the cursor's."""

    def __init__(self, connection: StrictConnection, cursor: Any) -> None:
        self._connection = connection
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] | None = None, *args: Any, **kw: Any) -> Any:
        self._connection.check(sql, params)
        result = self._cursor.execute(sql, params, *args, **kw)
        return self if result is self._cursor else result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __iter__(self) -> Any:
        return iter(self._cursor)

    def __enter__(self) -> StrictCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cursor.close()


class StrictConnection:
    """A connector connection whose cursors check every statement against Snowflake's rules."""

    def __init__(
        self, connection: Any, component: str, on_violation: OnViolation | None = None
    ) -> None:
        self._connection = connection
        self.component = component
        self._on_violation = on_violation

    def cursor(self, *args: Any, **kw: Any) -> StrictCursor:
        return StrictCursor(self, self._connection.cursor(*args, **kw))

    def close(self) -> None:
        self._connection.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def check(self, sql: str, binds: Sequence[Any] | None) -> None:
        """Raise the connector's error, as Snowflake would, if `sql` breaks a rule."""
        try:
            check_text(sql)
            check_binds(binds)
            add = _ADD_COLUMN.match(sql)
            if add is not None:
                self._check_add_column(*add.groups())
            put = _PUT.match(sql)
            if put is not None:
                check_parquet(put.group(1))
        except StrictViolation as violation:
            logger.error(
                "strict check: %s sent a statement Snowflake refuses (%s)",
                self.component,
                violation,
            )
            if self._on_violation is not None:
                self._on_violation(violation.rule)
            raise _to_connector_error(violation) from None

    def _check_add_column(self, schema: str | None, table: str, column: str) -> None:
        cur = self._connection.cursor()
        sql = "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
        binds = [table.replace('""', '"')]
        if schema is not None:
            sql += " AND table_schema = ?"
            binds.append(schema.replace('""', '"'))
        cur.execute(sql, binds)
        have = {str(r[0]).upper() for r in cur.fetchall()}
        if column.replace('""', '"').upper() not in have and len(have) + 1 > MAX_COLUMNS_PER_TABLE:
            raise StrictViolation(
                "columns_per_table",
                f"ADD COLUMN to a table of {len(have)} columns (at most {MAX_COLUMNS_PER_TABLE})",
                COMPILATION,
            )


def wrap(connection: Any, component: str, on_violation: OnViolation | None = None) -> Any:
    """`connection`, checked (idempotent: a checked connection is returned as it is)."""
    if isinstance(connection, StrictConnection):
        return connection
    return StrictConnection(connection, component, on_violation)
