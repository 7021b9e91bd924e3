"""`_segflow_offsets` on the emulator, through the real connector: rows created by two sessions
at once end as one row each, and a flush whose one partition moved is fenced."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from sinks.snowflake.offsets import OffsetStore
from tests.integration.components import warehouse
from tests.integration.conftest import unique_name

pytestmark = pytest.mark.integration

PARTS = [("t.events", 0), ("t.events", 1), ("t.identity", 0)]


def _execute(conn: Any) -> Any:
    def run(sql: str, binds: Sequence[Any]) -> Any:
        cur = conn.cursor()
        cur.execute(sql, list(binds) if binds else None)
        return cur

    return run


@pytest.fixture
def sessions(warehouse_conn_params: dict[str, Any]) -> Iterator[tuple[Any, Any, OffsetStore]]:
    database = unique_name("OFFS")
    first = warehouse(warehouse_conn_params, database)
    second = warehouse(warehouse_conn_params, database)
    store = OffsetStore("_segflow", "g1")
    first.cursor().execute('CREATE SCHEMA IF NOT EXISTS "_SEGFLOW"')
    first.cursor().execute(store.create_sql())
    try:
        yield first, second, store
    finally:
        first.close()
        second.close()


def _rows(conn: Any, store: OffsetStore) -> list[tuple[str, int, int]]:
    cur = conn.cursor()
    cur.execute(f'SELECT "TOPIC", "PARTITION", "NEXT_OFFSET" FROM {store.table} ORDER BY 1, 2')
    return [(str(t), int(p), int(o)) for t, p, o in cur.fetchall()]


def test_rows_created_by_two_sessions_at_once_end_as_one_row_each(
    sessions: tuple[Any, Any, OffsetStore],
) -> None:
    first, second, store = sessions
    run_first, run_second = _execute(first), _execute(second)
    # Both sessions insert before either commits: neither sees the other's rows.
    first.cursor().execute("BEGIN")
    second.cursor().execute("BEGIN")
    store.insert_missing(run_first, PARTS)
    store.insert_missing(run_second, PARTS)
    first.cursor().execute("COMMIT")
    second.cursor().execute("COMMIT")
    assert len(_rows(first, store)) == 2 * len(PARTS)  # the race happened

    # The check after the commit (each session's ensure reads back) repairs them.
    assert store.ensure(run_first, PARTS) == dict.fromkeys(PARTS, -1)
    assert store.ensure(run_second, PARTS) == dict.fromkeys(PARTS, -1)
    assert _rows(second, store) == sorted((t, p, -1) for t, p in PARTS)


def test_a_flush_whose_one_partition_moved_is_fenced(
    sessions: tuple[Any, Any, OffsetStore],
) -> None:
    first, second, store = sessions
    run_first, run_second = _execute(first), _execute(second)
    store.ensure(run_first, PARTS)
    # the new owner of t.events[0] loads up to 10
    first.cursor().execute("BEGIN")
    assert store.compare_and_set(run_first, [("t.events", 0, -1, 10)])
    first.cursor().execute("COMMIT")
    # the old owner's flush of both partitions still expects -1 on each
    second.cursor().execute("BEGIN")
    assert not store.compare_and_set(run_second, [("t.events", 0, -1, 7), ("t.events", 1, -1, 4)])
    second.cursor().execute("ROLLBACK")
    assert _rows(first, store) == [("t.events", 0, 10), ("t.events", 1, -1), ("t.identity", 0, -1)]

    # a duplicated row of one partition does not hide the fenced one
    first.cursor().execute(
        f"INSERT INTO {store.table} SELECT 'g1', 't.events', 1, -1, CURRENT_TIMESTAMP(), 'zz'"
    )
    second.cursor().execute("BEGIN")
    assert not store.compare_and_set(run_second, [("t.events", 1, -1, 4), ("t.events", 0, -1, 7)])
    second.cursor().execute("ROLLBACK")
    assert _rows(first, store)[:2] == [("t.events", 0, 10), ("t.events", 1, -1)]
