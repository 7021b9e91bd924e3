"""End to end: Segment SDK -> edge -> Kafka -> processors -> sink -> warehouse.

One pipeline, realistic traffic of every call type from the real Segment Python SDK, then what
an analyst and an auditor would check in the warehouse and on the topics.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from ingest.demo import Call, journeys, malformed_requests, send
from schemas.codec import SCHEMA_CHANGE, AvroCodec
from schemas.naming import event_table_name
from schemas.topics import HEADER_ERROR, HEADER_ORIGIN_TOPIC
from sinks.snowflake.rows import CALL_TABLES as CALL_TABLE
from tests.integration.components import decode_all, read_topic
from tests.integration.pipeline import WRITE_KEY, Pipeline, poll, post, running_pipeline

pytestmark = pytest.mark.integration

USERS = 12


@pytest.fixture(scope="module")
def pipeline(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], tmp_path_factory: Any
) -> Iterator[Pipeline]:
    tmp: Path = tmp_path_factory.mktemp("e2e")
    with running_pipeline(kafka_bootstrap, warehouse_conn_params, tmp) as pipe:
        yield pipe


@pytest.fixture(scope="module")
def traffic(pipeline: Pipeline) -> dict[str, Any]:
    """Send the traffic once; wait until the warehouse holds all of it."""
    now = datetime.now(UTC)
    calls = list(journeys(USERS, seed=11, now=now, duplicate_fraction=0.15, late_fraction=0.1))
    assert any(c.duplicate for c in calls)
    # an anonymous event after identify: the processor must stitch it to the user
    identify = next(c for c in calls if c.method == "identify")
    after = Call(
        "track",
        {
            "anonymous_id": identify.kwargs["anonymous_id"],
            "event": "Post Identify Click",
            "properties": {"button": "upgrade"},
            "message_id": str(uuid.uuid4()),
            "timestamp": now,
        },
    )
    report = send(calls, pipeline.edge, WRITE_KEY)
    assert not report.errors, report.errors
    # after the identify has been processed, so stitching can know the link
    poll(lambda: pipeline.count("identifies") >= USERS, 90, "identifies loaded")
    report2 = send([after], pipeline.edge, WRITE_KEY)
    assert not report2.errors
    report.message_ids["track"].add(after.message_id)

    bad = {
        path: post(pipeline.edge + path, body) for path, body, _ in malformed_requests(WRITE_KEY)
    }

    # a poison record straight onto a raw topic: the processors must send it to the DLQ
    producer = Producer({"bootstrap.servers": pipeline.bootstrap})
    producer.produce(pipeline.topics.raw("track"), key=b"poison", value=b"\x00not avro")
    producer.flush(10)

    expected = {t: len(ids) for t, ids in report.message_ids.items()}
    for call_type, n in expected.items():
        table = CALL_TABLE[call_type]

        def loaded(table: str = table, n: int = n) -> bool:
            return pipeline.count(table) >= n

        poll(loaded, 120, f"{n} rows in {table}")
    return {
        "calls": calls,
        "ids": report.message_ids,
        "identify": identify,
        "after": after,
        "bad": bad,
    }


def test_every_call_type_lands_exactly_once(pipeline: Pipeline, traffic: dict[str, Any]) -> None:
    for call_type, ids in traffic["ids"].items():
        table = CALL_TABLE[call_type]
        rows = pipeline.query(f"SELECT id FROM web.{table}")
        loaded = [r[0] for r in rows]
        assert len(loaded) == len(set(loaded)), f"duplicates in {table}"
        assert set(loaded) == ids, table


def test_per_event_tables(pipeline: Pipeline, traffic: dict[str, Any]) -> None:
    orders = {
        c.message_id
        for c in traffic["calls"]
        if c.method == "track" and c.kwargs["event"] == "Order Completed"
    }
    table = event_table_name("Order Completed")
    rows = pipeline.query(f"SELECT id, revenue, currency FROM web.{table}")
    assert {r[0] for r in rows} == orders
    assert len(rows) == len(orders)
    assert all(r[1] > 0 and r[2] == "USD" for r in rows)
    tracks = pipeline.query("SELECT DISTINCT event, event_text FROM web.tracks")
    assert ("order_completed", "Order Completed") in tracks


def test_pages_have_campaign_columns(pipeline: Pipeline, traffic: dict[str, Any]) -> None:
    rows = pipeline.query(
        "SELECT context_campaign_source, context_campaign_medium, context_campaign_name "
        "FROM web.pages"
    )
    assert rows and all(r[0] in {"google", "newsletter", "twitter"} for r in rows)
    assert all(r[1] and r[2] for r in rows)


def test_identity_is_stitched(pipeline: Pipeline, traffic: dict[str, Any]) -> None:
    identify = traffic["identify"]
    user_id = identify.kwargs["user_id"]
    after = traffic["after"]
    row = pipeline.query(
        "SELECT anonymous_id, user_id, canonical_user_id FROM web.tracks "
        f"WHERE id = '{after.message_id}'"
    )
    assert row == [(identify.kwargs["anonymous_id"], None, user_id)]
    links = pipeline.query(
        f"SELECT canonical_user_id FROM web.identity_map "
        f"WHERE identifier = '{identify.kwargs['anonymous_id']}'"
    )
    assert links == [(user_id,)]


def test_users_and_accounts_hold_latest_traits(pipeline: Pipeline, traffic: dict[str, Any]) -> None:
    identifies = [c for c in traffic["calls"] if c.method == "identify" and not c.duplicate]
    users = dict(pipeline.query("SELECT id, plan FROM web.users"))
    assert set(users) == {c.kwargs["user_id"] for c in identifies}
    for c in identifies:
        assert users[c.kwargs["user_id"]] == c.kwargs["traits"]["plan"]
    groups = {c.kwargs["group_id"] for c in traffic["calls"] if c.method == "group"}
    accounts = pipeline.query("SELECT id, industry, employees FROM web.accounts")
    assert {r[0] for r in accounts} == groups
    assert all(r[1] and r[2] >= 1 for r in accounts)


EMAIL = re.compile(r"user-\d{6}-\d{6}@example\.com")
PHONE = re.compile(r"\+1 415 555 \d{4}")


def test_no_raw_pii_anywhere_in_the_warehouse(pipeline: Pipeline, traffic: dict[str, Any]) -> None:
    tables = pipeline.query(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns "
        "WHERE data_type IN ('TEXT', 'VARCHAR', 'VARIANT', 'OBJECT', 'ARRAY')"
    )
    assert len(tables) > 50
    raw_emails = {c.kwargs["traits"]["email"] for c in traffic["calls"] if c.method == "identify"}
    scanned = 0
    for schema, table, column in tables:
        for (value,) in pipeline.query(f'SELECT "{column}"::VARCHAR FROM {schema}.{table}'):
            if value is None:
                continue
            scanned += 1
            assert not EMAIL.search(value), f"raw email in {schema}.{table}.{column}"
            assert not PHONE.search(value), f"raw phone in {schema}.{table}.{column}"
            assert not any(e in value for e in raw_emails)
    assert scanned > 500
    # the traits are there, masked: a hashed email joins across tables, a phone keeps its last 4
    emails = pipeline.query("SELECT email, phone FROM web.users")
    assert all(re.fullmatch(r"[0-9a-f]{64}", e) for e, _ in emails)
    assert all(p.startswith("***") and p[-4:].isdigit() for _, p in emails)


def test_schema_changes_are_announced(pipeline: Pipeline, traffic: dict[str, Any]) -> None:
    messages = read_topic(pipeline.bootstrap, pipeline.topics.schema_changes, expected=1)
    changes = decode_all(SCHEMA_CHANGE, messages)
    fields = {(c["event"], c["field"]) for c in changes}
    # "duration_ms" is not in the tracking plan of the embedded rules
    assert any(f.endswith("duration_ms") for _, f in fields), fields
    # announced once per new field, not once per event
    assert len(changes) == len({(c["event"], c["field"], c["change"]) for c in changes})


def test_malformed_requests_are_refused_and_poison_goes_to_the_dlq(
    pipeline: Pipeline, traffic: dict[str, Any]
) -> None:
    for path, (status, body) in traffic["bad"].items():
        assert status == 400, path
        assert body.get("success") is False or "error" in body or "reason" in body, body
    messages = read_topic(pipeline.bootstrap, pipeline.topics.dlq, expected=1)
    poison = [m for m in messages if m.key() == b"poison"]
    assert len(poison) == 1
    headers = dict(poison[0].headers() or [])
    assert headers[HEADER_ORIGIN_TOPIC].decode() == pipeline.topics.raw("track")
    assert headers[HEADER_ERROR]
    assert poison[0].value() == b"\x00not avro"


def test_codec_reads_every_clean_record(pipeline: Pipeline, traffic: dict[str, Any]) -> None:
    """The clean topics hold only masked, decodable records."""
    codec = AvroCodec()
    messages = read_topic(pipeline.bootstrap, pipeline.topics.clean("identify"), expected=USERS)
    for m in messages:
        record = codec.decode("clean_event", m.value())
        assert "@example.com" not in record["traits"]
        assert record["piiKeyVersion"]
