"""Hostile input through the whole pipeline: edge -> broker -> processors -> sink -> warehouse.

A stream of good events interleaved with every hostile case of the production-safety work:
names too long for Snowflake, keys that normalise to nothing or to the same column, nesting
deeper than any encoder, numbers Snowflake cannot hold, identifiers and names of absurd length,
PII in keys, event names and integrations, a poison record on a raw topic. What a user checks:

- every good event lands exactly once, and the sink never stops (one start, still running);
- each hostile event is refused at the edge with a 4xx and a reason, or lands with its
  offending parts in `_unmapped`, or sits in the DLQ with its reason;
- no identifier in the warehouse exceeds Snowflake's 255 characters;
- no raw email, phone or card number appears in any table name, column name, value,
  schema-change record or DLQ record.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.snowflake_limits import MAX_IDENTIFIER_LENGTH
from tests.integration.pipeline import Pipeline, poll, post, running_pipeline

pytestmark = pytest.mark.integration

EMAIL = "jane.hostile@example.com"
PHONE = "+1 415 555 0134"
PHONE_NBSP = "+1\u00a0415\u00a0555\u00a00177"
PHONE_FULLWIDTH = "＋１ ４１５ ５５５ ０１８８"  # noqa: RUF001 - full-width digits on purpose
CARD = "4111 1111 1111 1111"
# what must never appear anywhere past the raw topics, in any spelling we sent
RAW_PII = [EMAIL, "jane.hostile", PHONE, "4155550134", "4155550177", "4155550188", CARD]
RAW_PII += ["4111111111111111", "415\u00a0555", "４１５"]  # noqa: RUF001

GOOD_ROUNDS = 6
GOOD_PER_ROUND = 15


def _event(call_type: str, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": call_type,
        "messageId": f"{call_type}-{uuid.uuid4()}",
        "anonymousId": f"anon-{uuid.uuid4().hex[:10]}",
        "timestamp": datetime.now(UTC).isoformat(),
    }
    event.update(fields)
    return event


DEEP = "__segflow_test_deep__"
DEPTH = 500  # past the Avro encoder (255) and within the JSON parser (1,024)


def _body(batch: list[dict[str, Any]]) -> bytes:
    """The batch request's JSON; DEEP stands for an object nested DEPTH levels (too deep for
    the json module to write, as it is meant to be)."""
    text = json.dumps({"batch": batch})
    return text.replace(f'"{DEEP}"', '{"n":' * DEPTH + "1" + "}" * DEPTH).encode()


def hostile_cases() -> list[tuple[str, dict[str, Any], str]]:
    """(case, event, what must happen): "refused" (a 4xx naming the item) or "lands"."""
    long_a, long_b = "a" * 200, "b" * 200
    return [
        (
            "long nested key",
            _event("track", event="Long Names", properties={long_a: {long_b: 1}}),
            "lands",
        ),
        (
            "two long keys sharing a prefix",
            _event(
                "track",
                event="Long Names",
                properties={"p" * 300 + "x": "first", "p" * 300 + "y": "second"},
            ),
            "lands",
        ),
        (
            "keys normalising to nothing",
            _event("track", event="Empty Keys", properties={"$$$": "dollars", "日本": "kanji"}),
            "lands",
        ),
        (
            "three colliding keys",
            _event("track", event="Colliding Keys", properties={"a b": 1, "a-b": 2, "A_B": 3}),
            "lands",
        ),
        (
            "nesting deeper than the encoder",
            _event("track", event="Deep", properties={"deep": DEEP}),
            "refused",
        ),
        (
            "a number Snowflake cannot hold",
            _event("track", event="Huge Number", properties={"big": 10**45 + 7}),
            "refused",
        ),
        (
            "an event name of 5,000 characters",
            _event("track", event="E" * 5000, properties={"x": 1}),
            "refused",
        ),
        (
            "a userId of 20,000 characters",
            _event("identify", userId="u" * 20_000, traits={"plan": "pro"}),
            "refused",
        ),
        (
            "a timestamp Snowflake cannot hold",
            _event("track", event="Odd Times", properties={"when": "0000-01-01T00:00:00Z"}),
            "lands",
        ),
        (
            "an email as a property key",
            _event("track", event="Pii Keys", properties={EMAIL: "yes", "ok": 1}),
            "lands",
        ),
        (
            "a phone number in the event name",
            _event("track", event=f"Called {PHONE}", properties={"ok": 1}),
            "lands",
        ),
        (
            "a card number in integrations",
            _event("track", event="Pii Integrations", integrations={"Custom": {"note": CARD}}),
            "lands",
        ),
        (
            "phones with non-breaking spaces and full-width digits",
            _event(
                "track",
                event="Pii Phones",
                properties={"contact": f"call {PHONE_NBSP}", "backup": f"or {PHONE_FULLWIDTH}"},
            ),
            "lands",
        ),
        (
            "an email as a trait key and a page name holding an email",
            _event("page", name=f"Profile of {EMAIL}", properties={EMAIL: 1}),
            "lands",
        ),
    ]


def _good_batch(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        call_type = ("track", "identify", "page")[i % 3]
        if call_type == "track":
            out.append(_event("track", event="Good Event", properties={"i": i, "plan": "pro"}))
        elif call_type == "identify":
            out.append(_event("identify", userId=f"user-{uuid.uuid4().hex[:8]}", traits={"i": i}))
        else:
            out.append(_event("page", name="Home", properties={"path": "/"}))
    return out


TABLE_OF = {"track": "tracks", "identify": "identifies", "page": "pages"}


@pytest.fixture(scope="module")
def pipeline(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], tmp_path_factory: Any
) -> Iterator[Pipeline]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    with running_pipeline(kafka_bootstrap, warehouse_conn_params, tmp) as pipe:
        yield pipe


@pytest.fixture(scope="module")
def outcome(pipeline: Pipeline) -> dict[str, Any]:
    """Send good batches interleaved with each hostile event; wait until all good ones landed."""
    good: dict[str, set[str]] = {t: set() for t in TABLE_OF}
    answers: dict[str, tuple[int, dict[str, Any], dict[str, Any], str]] = {}
    cases = hostile_cases()
    for i, (case, event, expect) in enumerate(cases):
        if i % 2 == 0:
            batch = _good_batch(GOOD_PER_ROUND)
            status, body = post(pipeline.edge + "/v1/batch", _body(batch))
            assert status == 200, body
            for e in batch:
                good[e["type"]].add(e["messageId"])
        status, body = post(pipeline.edge + "/v1/batch", _body([event]))
        answers[case] = (status, body, event, expect)
    # a poison record straight onto a raw topic
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": pipeline.bootstrap})
    producer.produce(pipeline.topics.raw("track"), key=b"poison", value=b"\x00not avro at all")
    producer.flush(10)
    for _ in range(GOOD_ROUNDS - (len(cases) + 1) // 2):
        batch = _good_batch(GOOD_PER_ROUND)
        status, body = post(pipeline.edge + "/v1/batch", _body(batch))
        assert status == 200, body
        for e in batch:
            good[e["type"]].add(e["messageId"])

    for call_type, ids in good.items():
        table = TABLE_OF[call_type]

        def loaded(table: str = table, ids: set[str] = ids) -> bool:
            found = (
                {r[0] for r in pipeline.query(f"SELECT id FROM web.{table}")}
                if pipeline.count(table)
                else set()
            )
            return ids <= found

        poll(loaded, 180, f"every good {call_type} in web.{table}")
    return {"good": good, "answers": answers}


def _dlq(pipeline: Pipeline) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": pipeline.bootstrap,
            "group.id": f"hostile-dlq-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    topic = pipeline.topics.dlq
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
    ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
    consumer.assign(parts)
    out: list[Any] = []
    try:
        deadline = datetime.now(UTC).timestamp() + 20
        while sum(ends.values()) > len(out) and datetime.now(UTC).timestamp() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def _all_ids(pipeline: Pipeline) -> set[str]:
    ids: set[str] = set()
    for table in ("tracks", "identifies", "pages"):
        if pipeline.count(table):
            ids |= {r[0] for r in pipeline.query(f"SELECT id FROM web.{table}")}
    return ids


def test_every_good_event_lands_exactly_once(pipeline: Pipeline, outcome: dict[str, Any]) -> None:
    for call_type, ids in outcome["good"].items():
        table = TABLE_OF[call_type]
        rows = [r[0] for r in pipeline.query(f"SELECT id FROM web.{table}")]
        mine = [r for r in rows if r in ids]
        assert len(mine) == len(set(mine)), f"duplicates in web.{table}"
        assert set(mine) == ids, f"good events missing from web.{table}"


def test_the_sink_never_stopped(pipeline: Pipeline, outcome: dict[str, Any]) -> None:
    sink = pipeline.components["sink"]
    assert sink.proc.poll() is None, sink.output()
    assert pipeline.starts["sink"] == 1
    assert pipeline.components["process"].proc.poll() is None


def test_each_hostile_event_is_refused_or_lands_or_is_in_the_dlq(
    pipeline: Pipeline, outcome: dict[str, Any]
) -> None:
    answers = outcome["answers"]
    accepted = {
        case: event["messageId"] for case, (status, _, event, _) in answers.items() if status == 200
    }
    for case, (status, body, _, expect) in answers.items():
        if expect == "refused":
            assert 400 <= status < 500, f"{case}: {status} {body}"
        if 400 <= status < 500:
            assert expect != "lands", f"{case} was refused: {body}"
            reason = json.dumps(body)
            assert "0" in reason and len(reason) > 20, f"{case}: a 4xx naming no item: {body}"
        else:
            assert status == 200, f"{case}: {status} {body}"

    def settled() -> bool:
        loaded = _all_ids(pipeline)
        dlq = b"".join(m.value() or b"" for m in _dlq(pipeline))
        return all(mid in loaded or mid.encode() in dlq for mid in accepted.values())

    poll(settled, 120, "every accepted hostile event in a table or the DLQ", interval_s=2)
    loaded = _all_ids(pipeline)
    for case, mid in accepted.items():
        if answers[case][3] == "lands":
            assert mid in loaded, f"{case}: accepted but not loaded"


def _row(pipeline: Pipeline, table: str, mid: str) -> dict[str, Any]:
    conn = pipeline.connect()
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT * FROM web.{table} WHERE id = ?", (mid,))
        names = [d[0].lower() for d in cur.description]
        rows = cur.fetchall()
    finally:
        conn.close()
    assert len(rows) == 1, f"{mid}: {len(rows)} rows in web.{table}"
    return dict(zip(names, rows[0], strict=True))


def _unmapped(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("_unmapped")
    if raw is None:
        return {}
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def test_colliding_and_empty_keys_keep_every_value(
    pipeline: Pipeline, outcome: dict[str, Any]
) -> None:
    answers = outcome["answers"]
    mid = answers["three colliding keys"][2]["messageId"]
    row = _row(pipeline, "tracks", mid)
    per_event = _row(pipeline, "colliding_keys", mid)
    values = [per_event.get("a_b"), *list(_unmapped(per_event).values())]
    values += list(_unmapped(row).values())
    flat = json.dumps(values)
    for v in ("1", "2", "3"):
        assert v in flat, f"value {v} of a colliding key lost: {values}"

    mid = answers["keys normalising to nothing"][2]["messageId"]
    per_event = _row(pipeline, "empty_keys", mid)
    unmapped = json.dumps(_unmapped(per_event), ensure_ascii=False)
    assert "dollars" in unmapped and "kanji" in unmapped, unmapped


def test_nesting_past_the_json_parser_is_a_400_with_its_reason(
    pipeline: Pipeline, outcome: dict[str, Any]
) -> None:
    body = '{"batch": [{"type": "track", "event": "Deep", "userId": "u1", "properties": '
    body += '{"n":' * 5000 + "1" + "}" * 5000 + "}]}"
    status, answer = post(pipeline.edge + "/v1/batch", body.encode())
    assert status == 400 and "depth" in json.dumps(answer), answer


def test_a_timestamp_snowflake_cannot_hold_stays_queryable_text(
    pipeline: Pipeline, outcome: dict[str, Any]
) -> None:
    mid = outcome["answers"]["a timestamp Snowflake cannot hold"][2]["messageId"]
    row = _row(pipeline, "odd_times", mid)
    kept = [row.get("when"), *_unmapped(row).values()]
    assert "0000-01-01T00:00:00Z" in [str(v) for v in kept], row


def test_long_names_fit_and_keep_their_values(pipeline: Pipeline, outcome: dict[str, Any]) -> None:
    mid = outcome["answers"]["two long keys sharing a prefix"][2]["messageId"]
    row = _row(pipeline, "long_names", mid)
    assert "first" in row.values() and "second" in row.values(), "long keys collided"
    mid = outcome["answers"]["long nested key"][2]["messageId"]
    row = _row(pipeline, "long_names", mid)
    assert 1 in row.values() or "1" in json.dumps(_unmapped(row))


def test_no_identifier_exceeds_snowflakes_limit(
    pipeline: Pipeline, outcome: dict[str, Any]
) -> None:
    names = pipeline.query(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns"
    )
    assert names
    for schema, table, column in names:
        for name in (schema, table, column):
            assert len(name) <= MAX_IDENTIFIER_LENGTH, f"{len(name)} characters: {name[:60]}..."


_PII_PATTERNS = [
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),  # an email
    re.compile(r"\d{13,19}"),  # a card or long phone, digits only
]


def _holds_raw_pii(text: str) -> str | None:
    for needle in RAW_PII:
        if needle.lower() in text.lower():
            return needle
    return None


def test_no_raw_pii_in_names_values_changes_or_dlq(
    pipeline: Pipeline, outcome: dict[str, Any]
) -> None:
    columns = pipeline.query(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns "
        "WHERE table_schema NOT IN ('INFORMATION_SCHEMA')"
    )
    tables: dict[tuple[str, str], list[str]] = {}
    for schema, table, column in columns:
        for name in (table, column):
            found = _holds_raw_pii(name)
            assert found is None, f"raw PII in a name: {schema}.{table}.{column}"
            assert not _PII_PATTERNS[0].search(name), f"an email in a name: {table}.{column}"
        tables.setdefault((schema, table), []).append(column)
    assert ("WEB", "TRACKS") in tables or ("web", "tracks") in {
        (s.lower(), t.lower()) for s, t in tables
    }
    for (schema, table), _cols in tables.items():
        for row in pipeline.query(f'SELECT * FROM "{schema}"."{table}"'):
            text = json.dumps([str(v) for v in row], ensure_ascii=False)
            found = _holds_raw_pii(text)
            assert found is None, f"raw PII in a value of {schema}.{table}"

    changes = read_all(pipeline, pipeline.topics.schema_changes)
    for msg in changes:
        blob = (msg.value() or b"").decode("utf-8", "replace")
        assert _holds_raw_pii(blob) is None, "raw PII in a schema-change record"
    for msg in _dlq(pipeline):
        blob = (msg.value() or b"").decode("utf-8", "replace")
        blob += "".join(v.decode("utf-8", "replace") for _, v in (msg.headers() or []) if v)
        assert _holds_raw_pii(blob) is None, "raw PII in a DLQ record"


def read_all(pipeline: Pipeline, topic: str) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": pipeline.bootstrap,
            "group.id": f"hostile-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
    consumer.assign(parts)
    out: list[Any] = []
    quiet = 0
    try:
        while quiet < 6:
            msg = consumer.poll(0.5)
            if msg is None:
                quiet += 1
            elif msg.error() is None:
                out.append(msg)
                quiet = 0
    finally:
        consumer.close()
    return out


def test_the_poison_record_is_in_the_dlq_with_its_reason(
    pipeline: Pipeline, outcome: dict[str, Any]
) -> None:
    def poisoned() -> list[Any]:
        return [m for m in _dlq(pipeline) if m.value() == b"\x00not avro at all"]

    found = poll(poisoned, 60, "the poison record in the DLQ")
    headers = dict(found[0].headers() or [])
    assert headers.get("segflow-error"), headers
    assert headers.get("segflow-origin-topic") == pipeline.topics.raw("track").encode()
