"""The flush transaction's steps and its abort path, against spec'd fakes of the connector's
connection and cursor: a flush commits its rows, upserts, identity links and offsets together,
in its numbered order, or it rolls back and commits nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from schemas.errors import SegflowError
from sinks.snowflake.batcher import FlushBatch, PartitionSlice
from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.errors import FencedError, WarehouseMisfitError, WarehouseRetryableError
from sinks.snowflake.evolution import plan
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.offsets import OffsetStore
from sinks.snowflake.rows import Origin, TableRow, event_rows, identity_row
from sinks.snowflake.stager import StagedFlush, Stager
from sinks.snowflake.transaction import FlushResult, FlushTransaction
from tests.integration.sink_support import clean_event
from tests.unit.sinks.snowflake.fake_warehouse import (
    SETTINGS,
    FakeWarehouse,
    lock_timeout,
    misfit_error,
)

NOW = datetime(2026, 1, 2, tzinfo=UTC)
STAGING = "DELETE _segflow_staging"  # the staging table emptied (its name is unique)


def flush_rows() -> list[TableRow]:
    """A track, an identify (a users upsert), a group (an accounts upsert), an identity link."""
    rows = event_rows(clean_event("track", 0), Origin("t", 0, 0), audit=True)
    rows += event_rows(
        clean_event("identify", 1, user_id="u1", traits={"plan": "pro"}),
        Origin("t", 0, 1),
        audit=True,
    )
    rows += event_rows(
        clean_event("group", 2, group_id="g1", traits={"size": 3}), Origin("t", 0, 2), audit=True
    )
    link = {
        "identifier": "anon-1",
        "identifierType": "anonymous_id",
        "canonicalUserId": "u1",
        "source": "web",
        "messageId": "m-link",
        "linkedAt": NOW,
    }
    rows.append(identity_row(link, Origin("segment.identity", 0, 0)))
    return rows


@dataclass
class World:
    fake: FakeWarehouse
    conn: SinkConnection
    stager: Stager
    transaction: FlushTransaction
    metrics: SinkMetrics
    dropped: list[int]
    mark: int = 0

    def flush(self, batch: FlushBatch, prepared: StagedFlush) -> FlushResult:
        if prepared.staged_rows:
            self.stager.stage(prepared)
        self.mark = len(self.fake.statements)
        return self.transaction.run(batch, prepared, NOW)

    def ran(self) -> list[str]:
        """The transaction's statements, the staging table's name left out."""
        out = []
        for s in self.fake.since(self.mark):
            out.append(STAGING if s.startswith(STAGING) else s)
        return out

    def rollbacks(self) -> float:
        return self.metrics.rollbacks._value.get()  # type: ignore[attr-defined]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return world_of(tmp_path)


def world_of(tmp_path: Path) -> World:
    tmp_path.mkdir(parents=True, exist_ok=True)
    fake = FakeWarehouse()
    metrics = SinkMetrics(CollectorRegistry())
    offsets = OffsetStore("_segflow", "g")
    dropped: list[int] = []
    conn = SinkConnection(
        SETTINGS,
        "_segflow",
        offsets,
        metrics,
        connect=fake.connect,
        on_drop=lambda: dropped.append(1),
    )
    conn.open()
    stager = Stager(conn, "_segflow", stage_dir=tmp_path)
    transaction = FlushTransaction(conn, stager, offsets, metrics)
    return World(fake, conn, stager, transaction, metrics, dropped)


def batch_of(rows: list[TableRow]) -> FlushBatch:
    slices = [PartitionSlice("t", 0, 7, 10, 3), PartitionSlice("segment.identity", 0, -1, 1, 1)]
    return FlushBatch(slices, rows, 4, 0)


def staged(world: World, rows: list[TableRow]) -> StagedFlush:
    return world.stager.write(plan(rows, {}), {}, 0)


COMMITTED = [
    "BEGIN",
    "COPY",  # 1. the staged file into the staging table
    # 2. every table's rows: the append tables in one multi-table insert (by name: the same
    # tables make the same text), then the upserts' new versions
    "INSERT ALL audit_log, groups, identifies, order_completed, tracks",
    "INSERT users",
    "INSERT accounts",
    "INSERT identity_map",
    "DELETE users",  # 3. the rows the upserts replaced
    "DELETE accounts",
    "DELETE identity_map",
    "SELECT",  # the chains of the new link: the links of its identifier and user (none here)
    STAGING,  # 4. the staging table emptied
    "UPDATE",  # 5. the offsets compare-and-set (its duplicate check inside: offsets.py)
    "COMMIT",
]


def test_a_flush_commits_rows_upserts_identity_links_and_offsets_in_its_order(
    world: World,
) -> None:
    rows = flush_rows()
    prepared = staged(world, rows)
    result = world.flush(batch_of(rows), prepared)
    assert world.ran() == COMMITTED
    assert result.records == 4
    assert set(result.rows_loaded) == {
        "tracks",
        "order_completed",
        "audit_log",
        "identifies",
        "users",
        "groups",
        "accounts",
        "identity_map",
    }
    assert world.rollbacks() == 0 and world.conn.is_open
    # the multi-table insert's binds: the load time, a window bound per table, the schema
    calls = world.fake.connections[0].cursor.return_value.execute.call_args_list
    sql, binds = next(c.args for c in calls if c.args[0].startswith("INSERT ALL"))
    assert sql.count("?") == len(binds) == 1 + 5 + 1
    assert binds[0] == NOW.isoformat() and binds[-1] == "web"
    received = {r.values["received_at"] for r in rows if "received_at" in r.values}
    for bound in binds[1:-1]:  # 72 h before the earliest received_at of its table's rows
        assert datetime.fromisoformat(bound) + timedelta(hours=72) in received


def test_links_that_move_users_re_point_them_inside_the_transaction(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new link anon-1 -> u1 meets a stored u1 -> u2: the chain step reads the links of
    anon-1 and u1, then of u2 (none), and moves every row of anon-1 and u1 to u2, before the
    offsets move."""
    answer = world.fake._answer

    def stored(sql: str, binds: list[Any]) -> tuple[int, list[Any]]:
        if sql.startswith('SELECT "IDENTIFIER"'):
            asked = set(orjson.loads(binds[0]))
            links = [("anon-1", "anonymous_id", "u1", NOW), ("u1", "previous_id", "u2", NOW)]
            return 0, [link for link in links if link[0] in asked]
        return answer(sql, binds)

    monkeypatch.setattr(world.fake, "_answer", stored)
    rows = flush_rows()
    world.flush(batch_of(rows), staged(world, rows))
    chain = ["SELECT", "SELECT", "UPDATE"]
    at = COMMITTED.index("SELECT")
    assert world.ran() == COMMITTED[:at] + chain + COMMITTED[at + 1 :]
    update = next(s for s in world.fake.statements if s.startswith('UPDATE "WEB"'))
    assert update.startswith('UPDATE "WEB"."IDENTITY_MAP" t SET "CANONICAL_USER_ID"')
    moved = world.fake.connections[0].cursor.return_value.execute.call_args_list
    binds = next(c.args[1] for c in moved if c.args[0] == update)
    assert binds[0] == NOW.isoformat()
    assert orjson.loads(binds[1]) == [["anon-1", "u2"], ["u1", "u2"]]


def test_a_batch_with_nothing_staged_only_moves_its_offsets(world: World) -> None:
    """Every record of it suppressed or empty: no COPY, no staging table to empty."""
    prepared = staged(world, [])
    assert prepared.staged_rows == 0
    world.flush(batch_of([]), prepared)
    assert world.ran() == ["BEGIN", "UPDATE", "COMMIT"]


@pytest.mark.parametrize(
    "failing",
    [
        "COPY INTO",
        'INTO "WEB"."TRACKS" (',
        'INSERT INTO "WEB"."USERS"',
        'DELETE FROM "WEB"."IDENTITY_MAP"',
        'SELECT "IDENTIFIER", "IDENTIFIER_TYPE"',  # the identity chains' read
        'UPDATE "_SEGFLOW"."_SEGFLOW_OFFSETS"',
    ],
)
def test_a_failed_step_rolls_back_and_commits_nothing(world: World, failing: str) -> None:
    rows = flush_rows()
    prepared = staged(world, rows)
    world.fake.fail[failing] = lock_timeout()
    with pytest.raises(WarehouseRetryableError):
        world.flush(batch_of(rows), prepared)
    ran = world.ran()
    assert ran[-1] == "ROLLBACK" and ran.count("ROLLBACK") == 1
    assert "COMMIT" not in ran
    assert COMMITTED[: len(ran) - 1] == ran[:-1]  # nothing ran after the failed step
    assert world.rollbacks() == 1
    assert world.conn.is_open  # the rollback worked: the session is still good


def test_a_fenced_compare_and_set_rolls_back_and_raises_fenced(world: World) -> None:
    rows = flush_rows()
    prepared = staged(world, rows)
    world.fake.fenced = True
    with pytest.raises(FencedError) as raised:
        world.flush(batch_of(rows), prepared)
    assert raised.value.partitions == [("t", 0), ("segment.identity", 0)]
    ran = world.ran()
    assert ran[-2:] == ["UPDATE", "ROLLBACK"]  # the duplicate check is not needed
    assert ran.count("ROLLBACK") == 1 and "COMMIT" not in ran
    assert world.rollbacks() == 1 and world.conn.is_open


def test_a_misfit_is_classified_rolled_back_and_names_no_value(world: World) -> None:
    rows = flush_rows()
    prepared = staged(world, rows)
    world.fake.fail['INSERT INTO "WEB"."USERS"'] = misfit_error()
    with pytest.raises(WarehouseMisfitError) as raised:
        world.flush(batch_of(rows), prepared)
    assert raised.value.code == 100038
    assert "users" in str(raised.value) and "secret@example.com" not in str(raised.value)
    ran = world.ran()
    assert ran[-2:] == ["INSERT users", "ROLLBACK"] and "COMMIT" not in ran


def test_a_copy_that_loads_fewer_rows_than_staged_rolls_back_as_retryable(world: World) -> None:
    rows = flush_rows()
    prepared = staged(world, rows)
    world.fake.copy_short = 1
    with pytest.raises(WarehouseRetryableError, match="loaded"):
        world.flush(batch_of(rows), prepared)
    assert world.ran() == ["BEGIN", "COPY", "ROLLBACK"]


def test_the_same_tables_make_the_same_insert_whichever_event_came_first(
    world: World, tmp_path: Path
) -> None:
    """A warehouse that caches a statement's compilation by its text (the emulator does) sees
    one text for one set of tables."""
    rows = flush_rows()
    world.flush(batch_of(rows), staged(world, rows))
    other = world_of(tmp_path / "other")
    group = rows[-2].message_id  # the group event's rows first, each event's rows together
    reordered = [r for r in rows if r.message_id == group]
    reordered += [r for r in rows if r.message_id != group]
    assert reordered[0].table == "groups" and rows[0].table == "tracks"
    other.flush(batch_of(reordered), staged(other, reordered))

    def insert_all(w: World) -> str:
        calls = w.fake.connections[0].cursor.return_value.execute.call_args_list
        sql: str = next(c.args[0] for c in calls if c.args[0].startswith("INSERT ALL"))
        return re.sub(r"_SEGFLOW_STAGING_\w+", "<staging>", sql)  # each stager's own

    assert insert_all(other) == insert_all(world)


def test_a_failed_rollback_drops_the_connection(world: World) -> None:
    """Its session state is unknown: it is closed and what was cached about it forgotten."""
    rows = flush_rows()
    prepared = staged(world, rows)
    world.fake.fail['INTO "WEB"."TRACKS" ('] = lock_timeout()
    world.fake.fail["ROLLBACK"] = lock_timeout()
    with pytest.raises(SegflowError, match="insert on audit_log, groups, identifies and 2 more"):
        world.flush(batch_of(rows), prepared)
    assert not world.conn.is_open and world.dropped == [1]
    world.fake.connections[0].close.assert_called_once_with()
    assert "COMMIT" not in world.ran()
