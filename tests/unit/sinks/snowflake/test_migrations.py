from __future__ import annotations

from typing import Any
from unittest.mock import MagicMock

from sinks.snowflake.errors import WarehouseFatalError
from sinks.snowflake.migrations import LayoutMigration
from sinks.snowflake.tables import fixed_columns


class _Cursor:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


def test_a_schema_another_sink_upgraded_meanwhile_is_rolled_back_untouched() -> None:
    """The version row is checked again inside the transaction: a second sink moves nothing."""
    sent: list[str] = []

    def run(sql: str, binds: Any = (), *, kind: str, table: str | None = None) -> _Cursor:
        sent.append(sql)
        if "LATERAL FLATTEN" in sql:
            return _Cursor([("traits.name",)])
        if sql.startswith('SELECT "ID"'):
            return _Cursor([("i1", "t", 0, 1, None, '{"traits.name": "Ada"}')])
        if "COUNT(*)" in sql:
            return _Cursor([(1,)])
        return _Cursor([])

    conn = MagicMock()
    conn.run.side_effect = run
    schemas = MagicMock(max_columns_per_table=1000)
    migration = LayoutMigration(conn, schemas, "_segflow")
    assert migration.migrate_schema("web", {"identifies": dict(fixed_columns("identifies"))}) == []
    assert sent[-1] == "ROLLBACK" and not any(s.startswith("UPDATE") for s in sent)
    assert not any("INSERT" in s for s in sent)


def test_the_upgrade_runs_once_per_process_and_skips_upgraded_schemas() -> None:
    sent: list[str] = []

    def run(sql: str, binds: Any = (), *, kind: str, table: str | None = None) -> _Cursor:
        sent.append(sql)
        if sql.startswith('SELECT "SCHEMA_NAME"'):
            return _Cursor([("web",)])
        if "information_schema.columns" in sql:
            return _Cursor([("WEB", "USERS", "_UNMAPPED", "VARIANT", None)])
        return _Cursor([])

    conn = MagicMock()
    conn.run.side_effect = run
    migration = LayoutMigration(conn, MagicMock(), "_segflow")
    assert migration.ensure() == [] and migration.ensure() == []
    assert len(sent) == 3  # the version table, the versions, the layouts: nothing per schema


def test_a_schema_whose_upgrade_fails_is_rolled_back_and_loading_goes_on() -> None:
    sent: list[str] = []

    def run(sql: str, binds: Any = (), *, kind: str, table: str | None = None) -> _Cursor:
        sent.append(sql)
        if "information_schema.columns c" in sql:
            cols = [("WEB", "USERS", c.upper(), "TEXT", None) for c in fixed_columns("users")]
            return _Cursor(cols)
        if "LATERAL FLATTEN" in sql:
            return _Cursor([("traits.name",)])
        if sql.startswith('SELECT "ID"'):
            return _Cursor([("u1", "L1", '{"traits.name": "Ada"}')])
        if "information_schema.columns" in sql:  # after the column was added
            return _Cursor(
                [("USERS", c.upper(), "TEXT", None) for c in [*fixed_columns("users"), "name"]]
            )
        if "COUNT(*)" in sql:
            return _Cursor([(0,)])
        if sql.startswith("UPDATE"):
            raise WarehouseFatalError("refused")
        return _Cursor([])

    conn = MagicMock()
    conn.run.side_effect = run
    migration = LayoutMigration(conn, MagicMock(max_columns_per_table=1000), "_segflow")
    assert migration.ensure() == [] and migration.done
    assert sent[-1] == "ROLLBACK" and any(s.startswith("UPDATE") for s in sent)
