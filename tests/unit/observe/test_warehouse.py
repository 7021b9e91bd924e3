"""Which tables count as loaded by the sink, the one-statement MAX query, timestamps in UTC."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from observe.warehouse import (
    TableLoad,
    as_utc,
    loaded_tables,
    newest_sql,
    table_loads,
)


def test_tables_need_loaded_at_and_the_sinks_own_tables_are_left_out() -> None:
    rows = [
        ("SRC", "TRACKS", "LOADED_AT"),
        ("SRC", "TRACKS", "RECEIVED_AT"),
        ("SRC", "USERS", "LOADED_AT"),
        ("SRC", "IDENTITY_MAP", "RECEIVED_AT"),  # no loaded_at: not a loaded table
        ("SRC", "_SEGFLOW_SCHEMA_CHANGES", "LOADED_AT"),
    ]
    assert loaded_tables(rows) == [("SRC", "TRACKS", True), ("SRC", "USERS", False)]


def test_one_statement_reads_every_tables_newest_values() -> None:
    sql = newest_sql([("SRC", "TRACKS", True), ("SRC", "USERS", False)])
    assert sql == (
        'SELECT 0 AS i, MAX("LOADED_AT") AS l, MAX("RECEIVED_AT") AS r FROM "SRC"."TRACKS" '
        'UNION ALL SELECT 1 AS i, MAX("LOADED_AT") AS l, NULL AS r FROM "SRC"."USERS"'
    )


def test_timestamps_become_aware_utc() -> None:
    naive = datetime(2026, 1, 1, 12, 0)
    plus2 = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(naive) == as_utc(plus2) == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert as_utc(None) is None and as_utc("2026-01-01") is None


def test_table_loads_in_batches_and_an_empty_table_has_no_freshness() -> None:
    statements: list[str] = []
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def run(sql: str, binds: Sequence[Any] = (), *, kind: str = "select") -> list[Any]:
        statements.append(sql)
        if "information_schema" in sql:
            assert binds == ["_SEGFLOW"]
            return [("S", f"T{i}", "LOADED_AT") for i in range(60)]
        count = sql.count("UNION ALL") + 1
        return [(i, t if i else None, None) for i in range(count)]

    loads = table_loads(run, "_segflow")
    assert len(statements) == 3  # the catalogue, then 50 + 10 tables
    assert loads[0] == TableLoad("s", "t0", None, None)
    assert loads[0].freshness_s(t) is None
    assert loads[1].freshness_s(t + timedelta(seconds=90)) == 90.0


def test_the_session_cursor_runs_through_the_session() -> None:
    from unittest.mock import MagicMock

    from observe.warehouse import SessionCursor

    session = MagicMock()
    session.run.return_value.fetchall.return_value = [("a", 1)]
    cursor = SessionCursor(session)
    assert cursor.fetchall() == []
    cursor.execute("SELECT 1", None)
    assert cursor.fetchall() == [("a", 1)]
    session.run.assert_called_once_with("SELECT 1", (), kind="select")
