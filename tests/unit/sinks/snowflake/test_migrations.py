from __future__ import annotations

import weakref
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

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        page, self.rows = self.rows[:size], self.rows[size:]
        return page

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


class _Doc(dict[str, Any]):
    """An `_unmapped` as the connector hands it over, whose copies alive can be counted."""


class _Rows:
    """The rows query's cursor: `n` identifies rows, made as they are fetched, never whole."""

    def __init__(self, n: int, page: int, seen: list[tuple[int, int]], sent: list[int]) -> None:
        self.n, self.page, self.seen, self.sent = n, page, seen, sent
        self.read = 0
        self.alive: list[weakref.ref[_Doc]] = []

    def fetchall(self) -> list[tuple[Any, ...]]:
        raise AssertionError("the rows fetched whole")

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        assert size == self.page
        alive = sum(r() is not None for r in self.alive)
        self.seen.append((alive, self.read - self.sent[0]))
        out: list[tuple[Any, ...]] = []
        for i in range(self.read, min(self.read + size, self.n)):
            doc = _Doc({"traits.name": f"N{i}", "traits.plan": "pro"})
            self.alive.append(weakref.ref(doc))
            out.append((f"i{i:03}", "t", 0, i, None, doc))
        self.read += len(out)
        return out


def test_the_upgrade_holds_a_page_of_rows_and_of_moves_never_the_table() -> None:
    """Both reads of the rows (the plan's, the move's) fetch a page at a time and drop it
    before the next; moves are sent before more than a page of them is pending."""
    n, page = 95, 10
    seen: list[tuple[int, int]] = []  # per page fetched: rows alive, rows read and not sent
    sent = [0]
    reads: list[_Rows] = []
    cols = list(fixed_columns("identifies"))

    def run(sql: str, binds: Any = (), *, kind: str, table: str | None = None) -> Any:
        if "information_schema.columns c" in sql:
            return _Cursor([("WEB", "IDENTIFIES", c.upper(), "TEXT", None) for c in cols])
        if "information_schema.columns" in sql:  # after the column was added
            return _Cursor([("IDENTIFIES", c.upper(), "TEXT", None) for c in [*cols, "name"]])
        if "LATERAL FLATTEN" in sql:
            return _Cursor([("traits.name",), ("traits.plan",)])
        if sql.startswith('SELECT "ID"'):
            reads.append(_Rows(n, page, seen, sent))
            return reads[-1]
        if "COUNT(*)" in sql:
            return _Cursor([(0,)])
        if sql.startswith("UPDATE"):
            rows = len(binds) // 6  # 4 identity columns, the name, the rest of _unmapped
            sent[0] += rows
            return _Cursor([(rows,)])
        return _Cursor([])

    conn = MagicMock()
    conn.run.side_effect = run
    schemas = MagicMock(max_columns_per_table=1000)
    migration = LayoutMigration(conn, schemas, "_segflow", page_rows=page)
    done = migration.ensure()
    assert [(m.table, m.column, m.column_type, m.moved) for m in done] == [
        ("identifies", "name", "VARCHAR", n)
    ]
    assert len(reads) == 2 and all(r.read == n for r in reads) and sent[0] == n
    assert len(seen) == 2 * (n // page + 2)  # every page of both reads, and the empty last
    assert max(alive for alive, _ in seen) <= page  # the page before, at most
    assert max(pending for _, pending in seen[len(seen) // 2 :]) <= page
