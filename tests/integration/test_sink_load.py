"""The Snowflake sink on the real broker and the emulator, through the real connector: Segment's
tables and columns, latest traits, idempotence, schema evolution, suppression, fencing, the DLQ,
the processors' schema changes, and a stop or rebalance that loads what the sink holds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry

from runtime.settings import KafkaSettings, WarehouseSettings
from runtime.suppressions import publish_suppressions
from schemas.topics import (
    HEADER_ERROR_CODE,
    HEADER_ORIGIN_OFFSET,
    HEADER_ORIGIN_PARTITION,
    HEADER_ORIGIN_TOPIC,
)
from sinks.snowflake.batcher import FlushBatch, PartitionSlice
from sinks.snowflake.errors import FencedError
from sinks.snowflake.loader import LoaderOptions, SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.rows import Origin, event_rows
from tests.integration.conftest import free_port, unique_name
from tests.integration.sink_support import (
    SinkProcess,
    Warehouse,
    clean_event,
    encode_change,
    encode_event,
    encode_link,
    identity_link,
    make_topics,
    poll_until,
    produce,
    read_topic,
    schema_change,
    scrape_metrics,
    scrape_samples,
    sink_env,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
CALLS = ("track", "identify", "page", "screen", "group", "alias")


@pytest.fixture
def run(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    run_id = unique_name("sinkload")  # the session deletes its topics at its end
    prefix = f"{run_id}."
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
            message_id="late-identify",
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
    # the identify may land in a later flush than the track
    poll_until(
        lambda: (
            wh.query('SELECT COUNT(*) FROM "WEB"."IDENTIFIES" WHERE "ID" = \'late-identify\'')
            == [(1,)]
        ),
        30,
        "the second identify",
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
    # a new property added a column; ints widened to float; a boolean column met a string
    # and widened to text, keeping the earlier value as "true"
    types = dict(
        wh.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'WEB' AND table_name = 'CART_VIEWED'"
        )
    )
    assert types["COUPON"] == "TEXT" and types["ITEMS"] == "FLOAT" and types["PAID"] == "TEXT"
    assert sorted(wh.query('SELECT "ITEMS", "PAID" FROM "WEB"."CART_VIEWED"')) == [
        (3.0, "true"),
        (4.5, "yes"),
    ]
    changes = wh.query(
        'SELECT "TABLE_NAME", "COLUMN_NAME", "CHANGE" FROM "WEB"."_SEGFLOW_SCHEMA_CHANGES"'
    )
    assert ("cart_viewed", "paid", "column_widened") in changes
    assert ("cart_viewed", "items", "column_widened") in changes
    assert ("cart_viewed", "coupon", "column_added") in changes

    # replaying every offset (a new consumer group starts from the beginning) adds no row
    audit_before = wh.query('SELECT COUNT(*) FROM "WEB"."AUDIT_LOG"')
    assert sink.stop() == 0, sink.log()[-3000:]
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
    assert replay.stop() == 0, replay.log()[-3000:]
    assert wh.query('SELECT COUNT(*) FROM "WEB"."AUDIT_LOG"') == audit_before
    assert wh.query('SELECT COUNT(*) FROM "WEB"."TRACKS"') == [(6,)]
    assert wh.query('SELECT COUNT(*) FROM "WEB"."USERS"') == [(3,)]


def _partition_batch(
    tp: tuple[str, int], first: int, records: list[dict[str, Any]], expected: int
) -> FlushBatch:
    """A flush of `records` at offsets from `first` of partition `tp`, whose stored next offset
    the flush expects to be `expected`."""
    rows = []
    for offset, rec in enumerate(records, first):
        rows += event_rows(rec, Origin(tp[0], tp[1], offset), audit=True)
    n = len(records)
    return FlushBatch([PartitionSlice(tp[0], tp[1], expected, first + n, n)], rows, n, 0)


def _direct_loader(prefix: str, tp: tuple[str, int]) -> tuple[SnowflakeLoader, SinkMetrics, str]:
    """A loader of its own database (named from `prefix`) holding an offset row for `tp`."""
    database = f"{prefix}_{uuid.uuid4().hex[:10].upper()}"
    settings = WarehouseSettings(database=database, network_timeout_s=20)
    metrics = SinkMetrics(CollectorRegistry())
    loader = SnowflakeLoader(settings, LoaderOptions(group_id="g"), metrics)
    loader.ensure_offsets([tp])
    return loader, metrics, database


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
        recs = [
            clean_event("track", i, message_id=f"fence-{i}") for i in range(first, first + count)
        ]
        return _partition_batch(tp, first, recs, expected)

    owner.flush(batch(0, 10, expected=-1))
    with pytest.raises(FencedError):
        stale.flush(batch(0, 12, expected=-1))
    owner.flush(batch(10, 5, expected=10))
    assert owner.read_offsets([tp]) == {tp: 15}
    wh = Warehouse(database)
    assert wh.query('SELECT COUNT(*), COUNT(DISTINCT "ID") FROM "WEB"."TRACKS"') == [(15, 15)]
    assert stale_metrics.rollbacks._value.get() == 1  # type: ignore[attr-defined]
    # the rolled back flush left its staging table empty (the COPY is in the transaction)
    assert wh.query(f"SELECT COUNT(*) FROM {stale.staging}") == [(0,)]
    owner.close()
    stale.close()


def test_a_flush_prepared_ahead_loads_once_and_starts_over_when_a_layout_changed(
    warehouse_conn_params: dict[str, Any], tmp_path: Path
) -> None:
    """The consumer prepares the next flush (plan and staged file) while one is in the warehouse.
    Nothing is prepared before the tables exist; a prepared flush loads from its file and removes
    it; one prepared before another flush changed a layout is planned again."""
    database = f"SINK_AHEAD_{uuid.uuid4().hex[:10].upper()}"
    settings = WarehouseSettings(database=database, network_timeout_s=20)
    loader = SnowflakeLoader(
        settings,
        LoaderOptions(group_id="g", stage_dir=str(tmp_path)),
        SinkMetrics(CollectorRegistry()),
    )
    tp = ("topic.track", 0)
    assert loader.ensure_offsets([tp]) == {tp: -1}

    def batch(first: int, count: int, expected: int, **props: Any) -> FlushBatch:
        recs = [
            clean_event("track", i, message_id=f"ahead-{i}", properties=props or None)
            for i in range(first, first + count)
        ]
        return _partition_batch(tp, first, recs, expected)

    first = batch(0, 5, expected=-1)
    assert loader.prepare(first) is None  # the tables do not exist yet: DDL first
    loader.flush(first)

    second = batch(5, 5, expected=5)
    prepared = loader.prepare(second)
    assert prepared is not None and prepared.path.exists() and prepared.staged_rows == 5
    second.prepared = prepared
    replanned: list[int] = []
    prepare_here = loader._prepare_here

    def spy(b: FlushBatch) -> Any:
        replanned.append(b.records)
        return prepare_here(b)

    loader._prepare_here = spy  # type: ignore[method-assign,assignment]
    loader.flush(second)
    assert replanned == [] and not prepared.path.exists()

    # prepared ahead of a flush that adds a column: planned again against the new layout
    fourth = batch(15, 5, expected=15)
    fourth.prepared = loader.prepare(fourth)
    assert fourth.prepared is not None
    stale = fourth.prepared.path  # type: ignore[attr-defined]
    loader.flush(batch(10, 5, expected=10, giftWrap=True))
    assert replanned == [5]  # that flush needed DDL: planned in the flush
    loader.flush(fourth)
    assert replanned == [5, 5] and not stale.exists()

    assert loader.read_offsets([tp]) == {tp: 20}
    wh = Warehouse(database)
    assert wh.query('SELECT COUNT(*), COUNT(DISTINCT "ID") FROM "WEB"."TRACKS"') == [(20, 20)]
    assert wh.query('SELECT COUNT(*) FROM "WEB"."AUDIT_LOG"') == [(20,)]
    assert wh.query('SELECT COUNT("GIFT_WRAP") FROM "WEB"."ORDER_COMPLETED"') == [(5,)]
    assert list(tmp_path.glob("*.parquet")) == []
    loader.close()


def test_the_staging_table_is_reused_while_its_columns_hold_and_renamed_before_sweeps(
    warehouse_conn_params: dict[str, Any],
) -> None:
    """Each flush empties the staging table in its transaction, so the next one with the same
    staged columns, or fewer, loads into it without DDL; a new column re-creates it. Its name
    (which other instances' sweeps judge by) is renewed after a quarter of the sweep age, the
    old one dropped."""
    tp = ("topic.track", 0)
    loader, metrics, database = _direct_loader("SINK_STAGING", tp)

    def batch(first: int, count: int, **props: Any) -> FlushBatch:
        recs = [
            clean_event("track", i, message_id=f"st-{i}", properties=props or None)
            for i in range(first, first + count)
        ]
        return _partition_batch(tp, first, recs, first if first else -1)

    def ddl_count() -> float:
        return metrics.statements.labels("ddl")._value.get()  # type: ignore[attr-defined]

    wh = Warehouse(database)

    def staging_tables() -> set[str]:
        """Staging tables anywhere in the database, as schema.table (all in the control schema,
        whichever schema a flush's evolution created last)."""
        return {
            f"{r[0]}.{r[1]}".lower()
            for r in wh.query(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_name LIKE '_SEGFLOW_STAGING_%'"
            )
        }

    loader.flush(batch(0, 4))
    before = ddl_count()
    loader.flush(batch(4, 4))
    assert ddl_count() == before  # same columns: no DDL at all
    assert loader.staging.startswith("_segflow._segflow_staging_")
    assert wh.query(f"SELECT COUNT(*) FROM {loader.staging}") == [(0,)]
    loader.flush(batch(8, 4, giftWrap=True))  # a new column: evolution, and a new staging table
    assert ddl_count() > before
    assert staging_tables() == {loader.staging}
    before = ddl_count()
    loader.flush(batch(12, 4))  # fewer columns than the table has: loaded into it, no DDL
    assert ddl_count() == before
    gift_wrapped = 'SELECT COUNT(*), COUNT("GIFT_WRAP") FROM "WEB"."ORDER_COMPLETED"'
    assert wh.query(gift_wrapped) == [(16, 4)]  # the last four without: NULL

    first_name = loader.staging
    loader.options = LoaderOptions(group_id="g", staging_max_age_h=1e-7)  # 0.1 ms in quarters
    loader.flush(batch(16, 4, giftWrap=True))
    assert loader.staging != first_name
    assert staging_tables() == {loader.staging}  # the old one dropped

    assert wh.query('SELECT COUNT(*), COUNT(DISTINCT "ID") FROM "WEB"."TRACKS"') == [(20, 20)]
    assert wh.query(gift_wrapped) == [(20, 8)]
    assert loader.read_offsets([tp]) == {tp: 20}

    # a starting instance sweeps a dead process's old staging table, not a live one's
    wh.query('CREATE TABLE "_SEGFLOW"."_SEGFLOW_STAGING_20200101000000_DEADBEEF" ("X" INT)')
    other = SnowflakeLoader(
        loader.warehouse, LoaderOptions(group_id="g"), SinkMetrics(CollectorRegistry())
    )
    other.connect()
    assert staging_tables() == {loader.staging}
    other.close()
    loader.close()
    assert staging_tables() == set()


def test_undecodable_records_go_to_the_dlq_and_processor_schema_changes_are_loaded(
    run: dict[str, Any],
) -> None:
    """A poison record in the middle of a partition goes to the DLQ with its origin while the
    records around it load; the processors' schema_change records land (once, even re-sent) in
    `_segflow_schema_changes` beside the sink's own, each saying which stage detected it."""
    wh = Warehouse(run["database"])
    topic = run["topics"].clean("track")
    before = [clean_event("track", i, message_id=f"ok-{i}") for i in range(3)]
    after = [clean_event("track", i, message_id=f"ok-{i}") for i in range(3, 6)]
    poison = b"\x00not an avro record"
    messages = [encode_event(r) for r in before] + [(b"k", poison)]
    messages += [encode_event(r) for r in after]
    produce(run["bootstrap"], topic, messages, partition=0)
    change = schema_change("properties.giftWrap", messageId="ok-4")
    resent = encode_change(change)
    produce(run["bootstrap"], run["topics"].schema_changes, [resent, resent])
    port = free_port()
    sink = start_sink(run, f"g-{uuid.uuid4().hex[:6]}", SEGFLOW_SINK_METRICS_PORT=str(port))

    def ids() -> set[str]:
        return {r[0] for r in wh.try_query('SELECT "ID" FROM "WEB"."TRACKS"')}

    poll_until(lambda: ids() == {f"ok-{i}" for i in range(6)}, 60, "the records around it")
    dead = read_topic(run["bootstrap"], run["topics"].dlq, 1)
    assert len(dead) == 1 and dead[0].value() == poison
    headers = dict(dead[0].headers() or [])
    assert headers[HEADER_ORIGIN_TOPIC] == topic.encode()
    assert (headers[HEADER_ORIGIN_PARTITION], headers[HEADER_ORIGIN_OFFSET]) == (b"0", b"3")
    assert headers[HEADER_ERROR_CODE]
    # the partition moved past it: the warehouse holds the offset after the last record
    poll_until(
        lambda: (
            wh.query(
                'SELECT "NEXT_OFFSET" FROM "_SEGFLOW"."_SEGFLOW_OFFSETS" WHERE "TOPIC" = ? '
                'AND "PARTITION" = 0',
                [topic],
            )
            == [(7,)]
        ),
        30,
        "the offset past the poison record",
    )
    dlq = [
        v
        for k, v in scrape_samples(port).items()
        if k.startswith("segflow_sink_records_total{") and 'outcome="dlq"' in k
    ]
    assert sum(dlq) == 1.0

    changes = wh.query(
        'SELECT "DETECTED_BY", "TABLE_NAME", "COLUMN_NAME", "CHANGE", "VALUE_TYPE", '
        '"CALL_TYPE", "EVENT", "FIELD", "MODE", "EXAMPLE_MESSAGE_ID" '
        'FROM "WEB"."_SEGFLOW_SCHEMA_CHANGES" WHERE "DETECTED_BY" = \'processors\''
    )
    assert changes == [
        (
            "processors",
            "order_completed",
            "gift_wrap",
            "new_property",
            "string",
            "track",
            "Order Completed",
            "properties.giftWrap",
            "evolve",
            "ok-4",
        )
    ]
    sink_rows = wh.query(
        'SELECT "TABLE_NAME", "COLUMN_NAME", "CHANGE" FROM "WEB"."_SEGFLOW_SCHEMA_CHANGES" '
        "WHERE \"DETECTED_BY\" = 'sink'"
    )
    assert ("order_completed", "revenue", "column_added") in sink_rows
    assert sink.stop() == 0, sink.log()[-3000:]


@pytest.mark.parametrize("strategy", ["cooperative-sticky", "roundrobin"])
def test_a_stopping_or_rebalanced_sink_loads_what_it_holds(
    run: dict[str, Any], strategy: str
) -> None:
    """No age or size trigger fires (flush age 10 min): what the sink has read is loaded when
    a second instance joins (cooperative: the records of the partitions it takes, the rest when
    the first gets SIGTERM; eager, the default: everything, as every partition is revoked);
    Kafka's committed offsets then match the warehouse, and nothing is loaded twice."""
    eager = strategy == "roundrobin"
    wh = Warehouse(run["database"])
    records = [
        clean_event(call, i, message_id=f"held-{call}-{i}") for call in CALLS for i in range(10)
    ]
    send(run, records)
    group = f"g-{uuid.uuid4().hex[:6]}"
    held = {
        "SEGFLOW_SINK_FLUSH_AGE_S": "600",
        "SEGFLOW_SINK_HONOUR_SUPPRESSIONS": "false",
        "SEGFLOW_SINK_ASSIGNMENT_STRATEGY": strategy,
    }
    port = free_port()
    first = start_sink(run, group, SEGFLOW_SINK_METRICS_PORT=str(port), **held)
    poll_until(
        lambda: _metric(port, "segflow_sink_buffered_records") == len(records),
        60,
        "every record buffered",
    )
    assert wh.try_query('SELECT COUNT(*) FROM "WEB"."AUDIT_LOG"') in ([], [(0,)])
    second = start_sink(run, group, **held)
    poll_until(lambda: "revoked" in first.log(), 60, "a rebalance")

    def audit() -> int:
        rows = wh.try_query('SELECT COUNT(*) FROM "WEB"."AUDIT_LOG"')
        return int(rows[0][0]) if rows else 0

    moved = poll_until(audit, 30, "the revoked partitions' records")  # loaded on revocation
    assert moved == len(records) if eager else 0 < moved < len(records)
    assert "not loaded" not in first.log()
    assert first.stop() == 0, first.log()[-3000:]
    assert "not loaded" not in first.log()
    if not eager:  # eager: nothing was left to load at the stop
        assert "stopping: flushing" in first.log()
    assert audit() == len(records)
    assert wh.query('SELECT COUNT(DISTINCT "ID") FROM "WEB"."AUDIT_LOG"') == [(len(records),)]
    # Kafka's committed offsets (advice) follow the warehouse's, wherever the partitions went
    consumer = Consumer({"bootstrap.servers": run["bootstrap"], "group.id": group})

    def behind() -> list[tuple[str, int]]:
        lagging = []
        for call in CALLS:
            topic = run["topics"].clean(call)
            parts = [TopicPartition(topic, p) for p in range(2)]
            for tp in consumer.committed(parts, timeout=10):
                high = consumer.get_watermark_offsets(tp, timeout=10)[1]
                if high and tp.offset != high:
                    lagging.append((topic, tp.partition))
        return lagging

    try:
        poll_until(lambda: not behind(), 30, "Kafka's committed offsets")
    finally:
        consumer.close()
    assert second.stop() == 0, second.log()[-3000:]
    stored = wh.query(
        'SELECT SUM(GREATEST("NEXT_OFFSET", 0)) FROM "_SEGFLOW"."_SEGFLOW_OFFSETS" '
        'WHERE "CONSUMER_GROUP" = ? AND "TOPIC" LIKE \'%events%\'',
        [group],
    )
    assert stored == [(len(records),)]


def _metric(port: int, name: str) -> float | None:
    try:
        return scrape_metrics(port).get(name)
    except OSError:
        return None


def test_a_flush_of_many_event_names_is_one_insert_and_each_table_dedupes_its_own_ids(
    warehouse_conn_params: dict[str, Any],
) -> None:
    """A flush's append tables of a schema (tracks, a table per event name, audit_log, the
    other calls' tables) load with one multi-table insert; each table still skips the ids it
    holds within the lookback, and the flush reports what each table got."""
    tp = ("topic.track", 0)
    loader, metrics, database = _direct_loader("SINK_MANY", tp)
    names = [f"Feature {i} Used" for i in range(12)]

    def batch(first: int, ids: list[str]) -> FlushBatch:
        """Records at offsets from `first`; an id's call and event name follow from its number,
        so a re-sent id is the same event."""
        recs = []
        for mid in ids:
            k = int(mid.rsplit("-", 1)[1]) + (100 if "new" in mid else 0)
            call = "page" if k % 7 == 6 else "track"
            recs.append(clean_event(call, k, message_id=mid, event=names[k % len(names)]))
        return _partition_batch(tp, first, recs, first if first else -1)

    def inserts() -> float:
        return metrics.statements.labels("insert")._value.get()  # type: ignore[attr-defined]

    first_ids = [f"many-{i}" for i in range(48)]
    result = loader.flush(batch(0, first_ids))  # creates the tables (and records that)
    tables = {t for t, n in result.rows_loaded.items() if n}
    assert {"tracks", "pages", "audit_log"} | {f"feature_{i}_used" for i in range(12)} <= tables
    assert result.rows_loaded["audit_log"] == 48 and result.rows_loaded["pages"] == 6
    assert result.rows_loaded["tracks"] == 42

    # the same ids again (a replay) beside new ones: only the new ones land, table by table
    again = first_ids[:24] + [f"many-new-{i}" for i in range(24)]
    before = inserts()
    result = loader.flush(batch(48, again))
    assert inserts() == before + 1  # tracks, 12 event tables, pages, audit_log: one statement
    wh = Warehouse(database)
    assert wh.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM web.audit_log") == [(72, 72)]
    assert result.rows_loaded["audit_log"] == 24
    total = 0
    for i in range(12):
        table = f"web.feature_{i}_used"
        count, distinct = wh.query(f"SELECT COUNT(*), COUNT(DISTINCT id) FROM {table}")[0]
        assert count == distinct
        total += count
    tracks = wh.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM web.tracks")[0]
    pages = wh.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM web.pages")[0]
    assert tracks[0] == tracks[1] == total and pages[0] == pages[1] == 72 - total
    assert wh.query(f"SELECT COUNT(*) FROM {loader.staging}") == [(0,)]
    loader.close()
