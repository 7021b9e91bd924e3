"""The misfit path and the strict check on the real broker and the emulator.

The emulator takes what Snowflake refuses; the strict check (sinks/snowflake/strict.py, on by
default for the emulator) refuses it as Snowflake would, with Snowflake's codes. Here its LOB
limit is lowered to a few kB (in this process), so an ordinary record with one long property is
refused by the "warehouse" while the sink's own pre-flight (which goes by the real 16 MB) lets it
through: exactly the situation of a value only Snowflake rejects. The sink, run in-process, must
set that record apart in the DLQ and load every other record once, offsets moving past it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from runtime.rules import parse_rules
from runtime.settings import KafkaSettings, WarehouseSettings
from schemas.errors import FatalError
from schemas.topics import (
    HEADER_ERROR_CODE,
    HEADER_ORIGIN_OFFSET,
    HEADER_ORIGIN_PARTITION,
    HEADER_ORIGIN_TOPIC,
)
from sinks.snowflake import strict
from sinks.snowflake.consumer import SinkConsumer
from sinks.snowflake.ddl import create_table
from sinks.snowflake.loader import LoaderOptions, SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.session import WarehouseSession
from sinks.snowflake.settings import SinkSettings
from tests.integration.conftest import unique_name
from tests.integration.sink_support import (
    Warehouse,
    clean_event,
    encode_event,
    make_topics,
    poll_until,
    produce,
    read_topic,
)

pytestmark = pytest.mark.integration

RULES = "sources:\n  - name: web\n    write_keys: [k1]\n"
LOB_LIMIT = 4_000  # the strict check's LOB size in this test (Snowflake's: 16 MB)


@pytest.fixture
def sink_run(kafka_bootstrap: str) -> Iterator[dict[str, Any]]:
    run_id = unique_name("sinkmisfit")  # the session deletes its topics at its end
    prefix = f"{run_id}."
    ctx: dict[str, Any] = {
        "prefix": prefix,
        "database": f"SINK_MISFIT_{run_id.upper()}",
        "topics": make_topics(kafka_bootstrap, prefix, partitions=1),
        "bootstrap": kafka_bootstrap,
        "stops": [],
    }
    yield ctx
    for stop, thread in ctx["stops"]:
        stop.set()
        thread.join(60)


def start_sink(ctx: dict[str, Any], **settings: Any) -> SinkMetrics:
    """The sink as `segflow sink` wires it, in a thread of this process."""
    sink_settings = SinkSettings(
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        flush_age_s=0.5,
        retry_max_s=2.0,
        honour_suppressions=False,
        kafka=KafkaSettings(bootstrap=ctx["bootstrap"], topic_prefix=ctx["prefix"]),
        warehouse=WarehouseSettings(database=ctx["database"], network_timeout_s=20),
        **settings,
    )
    assert sink_settings.warehouse.strict_checks  # the emulator is always checked
    metrics = SinkMetrics(CollectorRegistry())
    loader = SnowflakeLoader(
        sink_settings.warehouse,
        LoaderOptions(
            group_id=sink_settings.group_id,
            max_columns_per_table=sink_settings.max_columns_per_table,
            max_tables_per_schema=sink_settings.max_tables_per_schema,
        ),
        metrics,
    )
    consumer = SinkConsumer(sink_settings, parse_rules(RULES), loader, metrics)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    ctx["stops"].append((stop, thread))
    return metrics


def test_a_record_the_warehouse_refuses_goes_to_the_dlq_and_the_partition_moves_on(
    sink_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(strict, "MAX_VARCHAR_BYTES", LOB_LIMIT)
    wh = Warehouse(sink_run["database"])
    topic = sink_run["topics"].clean("track")
    records = [clean_event("track", i, message_id=f"ok-{i}") for i in range(30)]
    records[17] = clean_event(
        "track", 17, message_id="too-long", properties={"essay": "x" * (2 * LOB_LIMIT)}
    )
    messages = [encode_event(r) for r in records]
    produce(sink_run["bootstrap"], topic, messages, partition=0)
    metrics = start_sink(sink_run)

    def ids() -> list[str]:
        return [r[0] for r in wh.try_query('SELECT "ID" FROM "WEB"."TRACKS"')]

    expected = sorted(f"ok-{i}" for i in range(30) if i != 17)
    poll_until(lambda: sorted(ids()) == expected, 120, "every other record loaded")
    (dead,) = read_topic(sink_run["bootstrap"], sink_run["topics"].dlq, 1)
    assert dead.value() == messages[17][1]  # the record as it was on its topic
    headers = dict(dead.headers() or [])
    assert headers[HEADER_ORIGIN_TOPIC] == topic.encode()
    assert (headers[HEADER_ORIGIN_PARTITION], headers[HEADER_ORIGIN_OFFSET]) == (b"0", b"17")
    assert headers[HEADER_ERROR_CODE] == b"warehouse_misfit_100082"
    poll_until(
        lambda: (
            wh.query(
                'SELECT "NEXT_OFFSET" FROM "_SEGFLOW"."_SEGFLOW_OFFSETS" WHERE "TOPIC" = ?', [topic]
            )
            == [(30,)]
        ),
        30,
        "the offset past the last record",
    )
    per_event = wh.query('SELECT COUNT(*), COUNT(DISTINCT "ID") FROM "WEB"."ORDER_COMPLETED"')
    assert per_event == [(29, 29)]
    assert metrics.misfits.labels("warehouse_100082")._value.get() == 1
    # the harness sees every refusal of the strict check, even those the misfit path absorbed
    assert metrics.strict_violations.labels("varchar_size")._value.get() >= 1


def test_a_statement_snowflake_refuses_fails_even_though_the_emulator_takes_it(
    kafka_bootstrap: str,
) -> None:
    """A violation is an error for whoever sent the statement (here: a 300-character column)."""
    database = f"STRICT_{uuid.uuid4().hex[:10].upper()}"
    statement = create_table("web", "wide", {"c" * 300: "VARCHAR"})
    refused: list[str] = []
    checked = WarehouseSettings(database=database, network_timeout_s=20)
    with WarehouseSession(checked, "test") as session:
        session.run('CREATE SCHEMA IF NOT EXISTS "WEB"', kind="ddl")
        session._conn._on_violation = refused.append
        with pytest.raises(FatalError, match="strict check"):
            session.run(statement, kind="ddl", table="wide")
    assert refused == ["identifier_length"]
    lenient = checked.model_copy(update={"strict": False})
    with WarehouseSession(lenient, "test") as session:
        session.run(statement, kind="ddl", table="wide")  # the emulator itself takes it


def test_track_events_beyond_the_tables_cap_land_in_tracks_unmapped(
    sink_run: dict[str, Any],
) -> None:
    wh = Warehouse(sink_run["database"])
    topic = sink_run["topics"].clean("track")
    records = [
        clean_event("track", i, message_id=f"e-{i}", event=f"Event {i}", properties={"n": i})
        for i in range(16)
    ]
    produce(sink_run["bootstrap"], topic, [encode_event(r) for r in records], partition=0)
    metrics = start_sink(sink_run, max_tables_per_schema=13)  # the least: reserved names + 2

    def tracks() -> int:
        rows = wh.try_query('SELECT COUNT(*) FROM "WEB"."TRACKS"')
        return int(rows[0][0]) if rows else 0

    poll_until(lambda: tracks() == 16, 120, "every event in tracks")
    tables = {
        r[0]
        for r in wh.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'WEB'"
        )
    }
    assert len(tables) <= 13
    folded = wh.query(
        'SELECT "ID", "_UNMAPPED":n::NUMBER FROM "WEB"."TRACKS" WHERE "_UNMAPPED":n IS NOT NULL'
    )
    own = {t for t in tables if t.startswith("EVENT_")}
    assert own and folded  # some events got tables, the others' properties were kept
    assert len(own) + len(folded) == 16
    assert {int(n) for _, n in folded} == {
        int(mid.split("-")[1]) for mid, _ in folded
    }  # each its own value
    limits = wh.query(
        'SELECT COUNT(*) FROM "WEB"."_SEGFLOW_SCHEMA_CHANGES" WHERE "CHANGE" = \'table_limit\''
    )
    assert limits[0][0] >= 1
    assert metrics.caps_hit.labels("tables_per_schema")._value.get() == 1


def test_properties_beyond_the_columns_cap_land_in_unmapped(sink_run: dict[str, Any]) -> None:
    wh = Warehouse(sink_run["database"])
    topic = sink_run["topics"].clean("track")
    records = [clean_event("track", i, message_id=f"c-{i}") for i in range(3)]
    produce(sink_run["bootstrap"], topic, [encode_event(r) for r in records], partition=0)
    # 19 fixed columns, 3 of context and order_id: revenue and currency find no room
    metrics = start_sink(sink_run, max_columns_per_table=23)

    def loaded() -> list[tuple[Any, ...]]:
        return wh.try_query(
            'SELECT "ORDER_ID", "_UNMAPPED":revenue::FLOAT, "_UNMAPPED":currency::STRING '
            'FROM "WEB"."ORDER_COMPLETED" ORDER BY "ORDER_ID"'
        )

    poll_until(lambda: len(loaded()) == 3, 120, "the events")
    rows = loaded()
    assert [r[0] for r in rows] == ["o0", "o1", "o2"]
    assert [(r[1] is not None, r[2]) for r in rows] == [(True, "EUR")] * 3, rows
    columns = wh.query(
        "SELECT COUNT(*) FROM information_schema.columns "
        "WHERE table_schema = 'WEB' AND table_name = 'ORDER_COMPLETED'"
    )
    assert columns == [(23,)]
    limits = wh.query(
        'SELECT DISTINCT "COLUMN_NAME" FROM "WEB"."_SEGFLOW_SCHEMA_CHANGES" '
        "WHERE \"CHANGE\" = 'column_limit'"
    )
    assert {r[0] for r in limits} == {"revenue", "currency"}
    assert metrics.caps_hit.labels("columns_per_table")._value.get() == 1
