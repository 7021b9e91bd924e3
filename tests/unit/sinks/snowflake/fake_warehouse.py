"""A spec'd fake of snowflake-connector-python's connection for the loader's unit tests.

Connections and cursors are `create_autospec` fakes of the connector's own classes (a call the
connector does not have fails the test). Every statement is recorded; answers are scripted by
what the statement is: layouts per schema for INFORMATION_SCHEMA.COLUMNS, the row count of the
file last PUT for COPY, a compare-and-set that matches every partition unless `fenced`. A
statement that contains a key of `fail` raises that error instead (as the connector would).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from unittest.mock import create_autospec

import pyarrow.parquet as pq
from snowflake.connector.connection import SnowflakeConnection
from snowflake.connector.cursor import SnowflakeCursor
from snowflake.connector.errors import OperationalError, ProgrammingError

from runtime.settings import WarehouseSettings
from sinks.snowflake.evolution import column_type_from_warehouse

Layout = dict[str, dict[str, str]]  # table -> column -> our type

SETTINGS = WarehouseSettings(strict=False)
"""No strict wrapper: the fake connection is what the loader's statements reach."""


def misfit_error() -> ProgrammingError:
    """What Snowflake raises for a value its column refuses (100038, a data error)."""
    return ProgrammingError(
        msg="Numeric value 'secret@example.com' is not recognized", errno=100038, sqlstate="22018"
    )


def lock_timeout() -> OperationalError:
    """A transient failure (625: lock wait timeout)."""
    return OperationalError(msg="lock wait timeout", errno=625, sqlstate="57014")


class FakeWarehouse:
    def __init__(self, layouts: Mapping[str, Layout] | None = None) -> None:
        self.layouts: dict[str, Layout] = {k.lower(): v for k, v in (layouts or {}).items()}
        self.fail: dict[str, BaseException] = {}
        """Statement text -> the error a statement containing it raises."""
        self.fenced = False
        """The compare-and-set matches no partition (another instance moved them)."""
        self.copy_short = 0
        """Rows of the staged file the COPY reports as not loaded."""
        self.statements: list[str] = []
        self.connections: list[Any] = []
        self._put_rows = 0

    def connect(self, **kwargs: Any) -> Any:
        conn = create_autospec(SnowflakeConnection, instance=True)
        # one cursor per connection (a spec'd fake takes ~0.1 s to build): each execute sets
        # what it answers, which the loader reads before its next statement
        conn.cursor.return_value = self._cursor()
        self.connections.append(conn)
        return conn

    def since(self, mark: int) -> list[str]:
        """The first words of the statements run after `mark` (a `len(statements)`)."""
        return [head(s) for s in self.statements[mark:]]

    def _cursor(self) -> Any:
        cur = create_autospec(SnowflakeCursor, instance=True)

        def execute(sql: str, binds: Sequence[Any] | None = None) -> Any:
            self.statements.append(sql)
            for text, exc in self.fail.items():
                if text in sql:
                    raise exc
            cur.rowcount, rows = self._answer(sql, list(binds or []))
            cur.fetchall.return_value = rows
            cur.fetchone.return_value = rows[0] if rows else None
            cur.description = (
                [(f"number of rows inserted into {t}",) for t in _into_tables(sql)]
                if sql.startswith("INSERT ALL")
                else None
            )
            return cur

        cur.execute.side_effect = execute
        return cur

    def _answer(self, sql: str, binds: list[Any]) -> tuple[int, list[Any]]:
        if sql.startswith("SELECT table_name, column_name"):
            layout = self.layouts.get(str(binds[0]).lower(), {})
            return 0, [
                (t, c, typ, 0 if typ == "NUMBER" else None)
                for t, cols in layout.items()
                for c, typ in cols.items()
            ]
        if sql.startswith("PUT 'file://"):
            path = sql[len("PUT 'file://") :].split("'", 1)[0]
            self._put_rows = pq.read_metadata(path).num_rows
            return 1, []
        if sql.startswith("COPY INTO"):
            loaded = self._put_rows - self.copy_short
            return 1, [("file.parquet", "LOADED", self._put_rows, loaded)]
        if sql.startswith("UPDATE") and "_SEGFLOW_OFFSETS" in sql.upper():
            moves = (len(binds) - 1) // 4
            return (0 if self.fenced else moves), []
        if sql.startswith("INSERT ALL"):  # a row into each table, as a plain INSERT answers
            tables = _into_tables(sql)
            return len(tables), [tuple(1 for _ in tables)]
        if sql.startswith("INSERT"):
            return 1, []
        return 0, []


def _into_tables(sql: str) -> list[str]:
    """The tables of a multi-table insert's INTO clauses."""
    return [p.split()[0].split(".")[-1].strip('"') for p in sql.split(" THEN INTO ")[1:]]


def head(sql: str) -> str:
    """A statement's kind for assertions: its first word, with the target of a DELETE/INSERT."""
    words = sql.split()
    if words[:2] == ["INSERT", "ALL"]:
        return "INSERT ALL " + ", ".join(t.lower() for t in _into_tables(sql))
    if words[0] in ("INSERT", "DELETE") and len(words) > 2:
        return f"{words[0]} {words[2].split('.')[-1].strip(chr(34)).lower()}"
    return words[0]


def layout_of(columns: Mapping[tuple[str, str], Mapping[str, str]]) -> dict[str, Layout]:
    """Layouts per schema as INFORMATION_SCHEMA would give them back (types round-tripped)."""
    out: dict[str, Layout] = {}
    for (schema, table), cols in columns.items():
        out.setdefault(schema, {})[table] = {
            c: column_type_from_warehouse(t, 0 if t == "NUMBER" else None) for c, t in cols.items()
        }
    return out
