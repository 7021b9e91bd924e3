"""The Snowflake sink on the real broker and the emulator, through the real connector: Segment's
tables and columns, latest traits, idempotence, schema evolution, suppression, fencing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from runtime.settings import KafkaSettings, WarehouseSettings
from runtime.suppressions import publish_suppressions
from sinks.snowflake.batcher import FlushBatch, PartitionSlice
from sinks.snowflake.errors import FencedError
from sinks.snowflake.loader import LoaderOptions, SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.rows import Origin, event_rows
from tests.integration.sink_support import (
    SinkProcess,
    Warehouse,
    clean_event,
    encode_event,
    encode_link,
    identity_link,
    make_topics,
    poll_until,
    produce,
    sink_env,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
CALLS = ("track", "identify", "page", "screen", "group", "alias")


@pytest.fixture
def run(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    run_id = uuid.uuid4().hex[:10]
    prefix = f"sinkload{run_id}."
    ctx: dict[str, Any] = {
        "prefix": prefix,
        "database": f"SINK_LOAD_{run_id.upper()}",
        "topics": make_topics(kafka_bootstrap, prefix, partitions=2),
        "bootstrap": kafka_bootstrap,
        "sinks": [],
        "tmp": tmp_path,
    }
    yield ctx
    for sink in ctx["sinks"]:
        sink.stop()


def start_sink(ctx: dict[str, Any], group: str, **env: str) -> SinkProcess:
    sink = SinkProcess(
        sink_env(ctx["bootstrap"], ctx["prefix"], ctx["database"], group, **env),
        ctx["tmp"] / f"sink-{len(ctx['sinks'])}.log",
    ).start()
    ctx["sinks"].append(sink)
    return sink


def send(ctx: dict[str, Any], records: list[dict[str, Any]]) -> None:
    for call in CALLS:
        batch = [encode_event(r) for r in records if r["type"] == call]
        if batch:
            produce(ctx["bootstrap"], ctx["topics"].clean(call), batch)


def test_events_land_in_segment_tables_exactly_once_with_evolution(run: dict[str, Any]) -> None:
    wh = Warehouse(run["database"])
    kafka = KafkaSettings(bootstrap=run["bootstrap"], topic_prefix=run["prefix"])
    publish_suppressions(kafka, {"forgotten-user": ["forgotten-anon"]}, reason="test")
    first = [
        clean_event(c, i, user_id=f"user-{i % 3}", group_id=f"acct-{i % 2}", received_at=T0)
        for i in range(4)
        for c in CALLS
    ]
    first[0]["messageId"] = "dup-1"
    first.append(
        clean_event(
            "identify",
            90,
            user_id="user-0",
            traits={"plan": "free", "email_hash": "h0"},
            received_at=T0 - timedelta(hours=1),
        )
    )
    first.append(
        clean_event(
            "track",
            91,
            user_id="forgotten-user",
            anonymous_id="forgotten-anon",
            event="Secret Event",
        )
    )
    first.append(
        clean_event("track", 92, event="Cart Viewed", properties={"items": 3, "paid": True})
    )
    send(run, first)
    produce(
        run["bootstrap"], run["topics"].identity, [encode_link(identity_link("anon-1", "user-1"))]
    )
    sink = start_sink(run, f"g-{uuid.uuid4().hex[:6]}")

    def tracks() -> int:
        rows = wh.try_query('SELECT COUNT(*) FROM "WEB"."TRACKS"')
        return int(rows[0][0]) if rows else 0

    poll_until(lambda: tracks() == 5, 90, "the first tracks")
    # later: a duplicate messageId, newer traits, a new property, a type conflict
    second = [
        clean_event("track", 0, message_id="dup-1", received_at=T0 + timedelta(minutes=1)),
        clean_event(
            "identify",
            93,
            user_id="user-0",
            traits={"plan": "pro"},
            received_at=T0 + timedelta(hours=1),
        ),
        clean_event(
            "track",
            94,
            event="Cart Viewed",
            properties={"items": 4.5, "paid": "yes", "coupon": "SPRING"},
        ),
    ]
    send(run, second)
    poll_until(lambda: tracks() == 6, 60, "the second tracks")
    poll_until(
        lambda: wh.try_query('SELECT COUNT(*) FROM "WEB"."USERS" WHERE "PLAN" = \'pro\''),
        30,
        "users",
    )

    # every call type in its table, with Segment's columns
    for table, count in [
        ("TRACKS", 6),
        ("ORDER_COMPLETED", 4),
        ("IDENTIFIES", 6),
        ("PAGES", 4),
        ("SCREENS", 4),
        ("GROUPS", 4),
        ("ALIASES", 4),
        ("CART_VIEWED", 2),
    ]:
        assert wh.query(f'SELECT COUNT(*) FROM "WEB"."{table}"') == [(count,)], table
    columns = {
        r[0]
        for r in wh.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'WEB' AND table_name = 'ORDER_COMPLETED'"
        )
    }
    assert {
        "ID",
        "ANONYMOUS_ID",
        "USER_ID",
        "RECEIVED_AT",
        "SENT_AT",
        "TIMESTAMP",
        "ORIGINAL_TIMESTAMP",
        "UUID_TS",
        "CONTEXT_LIBRARY_NAME",
        "CONTEXT_LOCALE",
        "EVENT",
        "EVENT_TEXT",
        "ORDER_ID",
        "REVENUE",
        "CURRENCY",
        "_UNMAPPED",
    } <= columns
    event, text, ts, received, sent, original = wh.query(
        'SELECT "EVENT", "EVENT_TEXT", "TIMESTAMP", "RECEIVED_AT", "SENT_AT", '
        '"ORIGINAL_TIMESTAMP" FROM "WEB"."TRACKS" WHERE "ID" = \'dup-1\''
    )[0]
    assert (event, text) == ("order_completed", "Order Completed")
    assert ts == received - (sent - original)
    # a duplicate messageId lands once (tracks, per-event table, audit)
    assert wh.query('SELECT COUNT(*) FROM "WEB"."TRACKS" WHERE "ID" = \'dup-1\'') == [(1,)]
    assert wh.query('SELECT COUNT(*) FROM "WEB"."AUDIT_LOG" WHERE "ID" = \'dup-1\'') == [(1,)]
    # users hold the latest traits and keep older ones the newer call lacks
    assert wh.query('SELECT "PLAN", "EMAIL_HASH" FROM "WEB"."USERS" WHERE "ID" = \'user-0\'') == [
        ("pro", "h0")
    ]
    assert wh.query('SELECT COUNT(*) FROM "WEB"."USERS"') == [(3,)]
    assert wh.query('SELECT COUNT(*), MAX("PLAN") FROM "WEB"."ACCOUNTS"') == [(2, "pro")]
    assert wh.query(
        'SELECT "CANONICAL_USER_ID" FROM "WEB"."IDENTITY_MAP" WHERE "IDENTIFIER" = \'anon-1\''
    ) == [("user-1",)]
    # suppressed user: nothing loaded
    assert wh.query(
        'SELECT COUNT(*) FROM "WEB"."AUDIT_LOG" WHERE "USER_ID" = \'forgotten-user\''
    ) == [(0,)]
    assert wh.try_query('SELECT COUNT(*) FROM "WEB"."SECRET_EVENT"') in ([], [(0,)])
    # a new property added a column; ints widened to float; a misfit went to _unmapped
    types = dict(
        wh.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'WEB' AND table_name = 'CART_VIEWED'"
        )
    )
    assert types["COUPON"] == "TEXT" and types["ITEMS"] == "FLOAT" and types["PAID"] == "BOOLEAN"
    items, paid, unmapped = wh.query(
        'SELECT "ITEMS", "PAID", "_UNMAPPED":paid::VARCHAR FROM "WEB"."CART_VIEWED" '
        "WHERE \"COUPON\" = 'SPRING'"
    )[0]
    assert (items, paid, unmapped) == (4.5, None, "yes")
    changes = wh.query(
        'SELECT "TABLE_NAME", "COLUMN_NAME", "CHANGE" FROM "WEB"."_SEGFLOW_SCHEMA_CHANGES"'
    )
    assert ("cart_viewed", "paid", "misfit") in changes
    assert ("cart_viewed", "items", "column_widened") in changes
    assert ("cart_viewed", "coupon", "column_added") in changes
    assert "do not fit web.cart_viewed column paid" in sink.log()

    # replaying every offset (a new consumer group starts from the beginning) adds no row
    audit_before = wh.query('SELECT COUNT(*) FROM "WEB"."AUDIT_LOG"')
    assert sink.stop() == 0
    replay = start_sink(run, f"replay-{uuid.uuid4().hex[:6]}")
    total = len(first) + len(second)  # every record's offset, the suppressed one's too
    poll_until(
        lambda: (
            wh.query(
                'SELECT SUM(GREATEST("NEXT_OFFSET", 0)) FROM "_SEGFLOW"."_SEGFLOW_OFFSETS" '
                "WHERE \"CONSUMER_GROUP\" LIKE 'replay-%' AND \"TOPIC\" LIKE '%events%'"
            )
            == [(total,)]
        ),
        60,
        "the replay",
    )
    assert replay.stop() == 0
    assert wh.query('SELECT COUNT(*) FROM "WEB"."AUDIT_LOG"') == audit_before
    assert wh.query('SELECT COUNT(*) FROM "WEB"."TRACKS"') == [(6,)]
    assert wh.query('SELECT COUNT(*) FROM "WEB"."USERS"') == [(3,)]


def test_a_stale_writer_is_fenced(warehouse_conn_params: dict[str, Any]) -> None:
    """Two loaders of one group hold the same partition; the one behind cannot commit."""
    database = f"SINK_FENCE_{uuid.uuid4().hex[:10].upper()}"
    settings = WarehouseSettings(database=database, network_timeout_s=20)
    owner_metrics = SinkMetrics(CollectorRegistry())
    stale_metrics = SinkMetrics(CollectorRegistry())
    owner = SnowflakeLoader(settings, LoaderOptions(group_id="g"), owner_metrics)
    stale = SnowflakeLoader(settings, LoaderOptions(group_id="g"), stale_metrics)
    tp = ("topic.track", 0)
    assert owner.ensure_offsets([tp]) == {tp: -1}
    assert stale.ensure_offsets([tp]) == {tp: -1}

    def batch(first: int, count: int, expected: int) -> FlushBatch:
        rows = []
        for i in range(first, first + count):
            rec = clean_event("track", i, message_id=f"fence-{i}")
            rows += event_rows(rec, Origin(tp[0], tp[1], i), audit=True)
        return FlushBatch(
            [PartitionSlice(tp[0], tp[1], expected, first + count, count)], rows, count, 0
        )

    owner.flush(batch(0, 10, expected=-1))
    with pytest.raises(FencedError):
        stale.flush(batch(0, 12, expected=-1))
    owner.flush(batch(10, 5, expected=10))
    assert owner.read_offsets([tp]) == {tp: 15}
    wh = Warehouse(database)
    assert wh.query('SELECT COUNT(*), COUNT(DISTINCT "ID") FROM "WEB"."TRACKS"') == [(15, 15)]
    assert stale_metrics.rollbacks._value.get() == 1  # type: ignore[attr-defined]
    owner.close()
    stale.close()
