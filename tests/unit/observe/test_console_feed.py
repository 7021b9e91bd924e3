"""The live feed: cheap summaries checked against the full decode, filters, bounded rings, and
a consumer that is only ever assigned partitions (no group, no commits, no payload in DLQ rows)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import MagicMock

import pytest
from confluent_kafka import OFFSET_END, Consumer

from observe.feed import (
    SUMMARY_FIELDS,
    DlqRing,
    EventRing,
    EventSummary,
    FeedFilter,
    LiveFeed,
    Summarizer,
    feed_consumer_config,
    summarize,
)
from runtime.settings import KafkaSettings
from schemas.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec
from schemas.dlq import dlq_headers
from schemas.errors import CodecError
from schemas.topics import HEADER_SOURCE

CODEC = AvroCodec()
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SECRET = "jane.doe@example.com"


def clean(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "type": "track",
        "messageId": "m-1",
        "source": "web",
        "anonymousId": "a-1",
        "userId": None,
        "previousId": None,
        "groupId": None,
        "event": "Order Completed",
        "name": None,
        "category": None,
        "receivedAt": NOW,
        "sentAt": None,
        "originalTimestamp": NOW - timedelta(seconds=3),
        "timestamp": NOW,
        "properties": '{"revenue": 9.5}',
        "traits": "{}",
        "context": '{"ip": "10.0.0.0"}',
        "integrations": "{}",
        "channel": None,
        "extra": "{}",
        "canonicalUserId": None,
        "maskedFields": ["context.ip:truncate"],
        "piiKeyVersion": None,
        "unmapped": "{}",
        "processedAt": NOW,
    }
    rec.update(overrides)
    return rec


CASES = [
    clean(),
    clean(type="page", event=None, name="Pricing ü-中文-🎉", userId="u" * 300),
    clean(type="alias", previousId="p", userId="u", anonymousId=None, event=None),
    clean(type="identify", event=None, source="", messageId="x" * 5000),
]


@pytest.mark.parametrize("rec", CASES)
def test_summary_fields_are_those_of_the_full_decode(rec: dict[str, Any]) -> None:
    data = CODEC.encode(CLEAN_EVENT, rec)
    decoded = CODEC.decode(CLEAN_EVENT, data)
    fast = Summarizer(CODEC, CLEAN_EVENT)
    assert fast._fast, "the clean schema's leading fields must allow the fast path"
    assert fast.fields(data) == {name: decoded[name] for name, _ in SUMMARY_FIELDS}


def test_raw_records_take_the_fast_path_too() -> None:
    rec = {k: v for k, v in clean().items() if k in {f["name"] for f in _raw_fields()}}
    data = CODEC.encode(RAW_EVENT, rec)
    fast = Summarizer(CODEC, RAW_EVENT)
    assert CODEC.latest(RAW_EVENT).fingerprint in fast._fast
    assert fast.fields(data)["event"] == "Order Completed"


def _raw_fields() -> list[dict[str, Any]]:
    return list(CODEC.latest(RAW_EVENT).schema["fields"])


def test_a_schema_without_the_prefix_is_decoded_whole() -> None:
    data = CODEC.encode(CLEAN_EVENT, clean(event="Signed Up"))
    slow = Summarizer(CODEC, CLEAN_EVENT)
    slow._fast = set()
    assert slow.fields(data)["event"] == "Signed Up"


def test_garbled_records_raise_codec_errors() -> None:
    data = CODEC.encode(CLEAN_EVENT, clean())
    fast = Summarizer(CODEC, CLEAN_EVENT)
    with pytest.raises(CodecError):
        fast.fields(data[:14])
    with pytest.raises(CodecError):
        fast.fields(b"not avro at all")


def line(seq: int, **kw: Any) -> EventSummary:
    fields = {"type": "track", "messageId": f"m{seq}", "source": "web", "event": "Order Done"}
    fields.update(kw)
    return summarize(
        fields, seq=seq, topic="segment.events.track", partition=0, offset=seq, timestamp_ms=1
    )


def test_filters_by_source_type_and_event_substring() -> None:
    track = line(1)
    page = line(2, type="page", name="Pricing", event=None, source="backend")
    assert page.event == "Pricing"  # a page's name stands in the event column
    assert FeedFilter().matches(track)
    assert FeedFilter(source="web").matches(track) and not FeedFilter(source="web").matches(page)
    assert FeedFilter(call_type="page").matches(page)
    assert not FeedFilter(call_type="page").matches(track)
    assert FeedFilter(event="order").matches(track)
    assert not FeedFilter(event="order").matches(page)
    assert not FeedFilter(source="web", event="pricing").matches(page)


def test_the_event_ring_keeps_only_the_last_n() -> None:
    ring = EventRing(10)
    for seq in range(1, 1001):
        ring.add(line(seq), b"v%d" % seq)
    assert len(ring) == 10
    assert [s.seq for s in ring.since(0)] == list(range(991, 1001))
    assert [s.seq for s in ring.since(995)] == [996, 997, 998, 999, 1000]
    assert [s.seq for s in ring.since(0, limit=3)] == [998, 999, 1000]
    assert ring.value(5) is None
    found = ring.value(995)
    assert found is not None and found[1] == b"v995"
    assert ring.last_seq == 1000
    with pytest.raises(ValueError):
        EventRing(0)
    with pytest.raises(ValueError):
        DlqRing(0)


@dataclass
class Msg:
    topic_: str
    partition_: int
    offset_: int
    value_: bytes | None
    headers_: list[tuple[str, bytes]] = field(default_factory=list)

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> list[tuple[str, bytes]]:
        return self.headers_

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_764_849_600_000


def fake_consumer(topics: dict[str, int], batches: list[list[Msg]]) -> MagicMock:
    consumer = MagicMock(spec_set=Consumer)
    meta = MagicMock()
    meta.topics = {
        name: MagicMock(error=None, partitions={p: None for p in range(n)})
        for name, n in topics.items()
    }
    consumer.list_topics.return_value = meta
    consumer.get_watermark_offsets.return_value = (3, 100)
    consumer.consume.side_effect = [*batches, *([[]] * 10)]
    return consumer


def test_the_feed_is_assigned_partitions_and_never_commits() -> None:
    kafka = KafkaSettings(topic_prefix="t.")
    poison_value = json.dumps({"email": SECRET}).encode()
    batches = [
        [
            Msg("t.segment.events.track", 0, 97, CODEC.encode(CLEAN_EVENT, clean())),
            Msg("t.segment.events.track", 0, 98, b"garbage"),
            Msg(
                "t.segment.dlq",
                0,
                5,
                poison_value,
                dlq_headers(
                    "invalid JSON in properties",
                    "codec",
                    "t.segment.raw.track",
                    1,
                    42,
                    [(HEADER_SOURCE, b"web")],
                ),
            ),
            Msg("t.segment.dlq", 0, 6, poison_value, []),
        ]
    ]
    consumer = fake_consumer(
        {"t.segment.events.track": 2, "t.segment.events.page": 1, "t.segment.dlq": 1}, batches
    )
    feed = LiveFeed(kafka, backlog=10, dlq_backlog=50, consumer_factory=lambda conf: consumer)
    assert feed.step(timeout=0) == 4
    assigned = consumer.incremental_assign.call_args.args[0]
    got = {(tp.topic, tp.partition): tp.offset for tp in assigned}
    assert got == {
        ("t.segment.events.track", 0): 90,
        ("t.segment.events.track", 1): 90,
        ("t.segment.events.page", 0): 90,
        ("t.segment.dlq", 0): 50,
    }
    consumer.subscribe.assert_not_called()
    consumer.commit.assert_not_called()
    consumer.store_offsets.assert_not_called()

    [event] = feed.events.since(0)
    assert (event.call_type, event.event, event.source, event.offset) == (
        "track",
        "Order Completed",
        "web",
        97,
    )
    assert feed.skipped == 1
    record = feed.record(event.seq)
    assert record is not None
    assert record["properties"] == {"revenue": 9.5} and record["maskedFields"]
    assert feed.record(event.seq + 99) is None

    first, second = feed.dlq.entries()
    assert (first.reason, first.code, first.origin_topic, first.origin_offset, first.source) == (
        "invalid JSON in properties",
        "codec",
        "t.segment.raw.track",
        42,
        "web",
    )
    assert second.code == "unknown"
    assert SECRET not in json.dumps([first.to_json(), second.to_json()])
    # a second step does not assign the same partitions again
    feed._next_check = 0
    feed.step(timeout=0)
    assert consumer.incremental_assign.call_count == 1


def test_without_backlog_the_feed_starts_at_the_end_and_raw_needs_the_flag() -> None:
    consumer = fake_consumer({"segment.events.track": 1, "segment.raw.track": 1}, [])
    feed = LiveFeed(
        KafkaSettings(), backlog=0, include_dlq=False, consumer_factory=lambda c: consumer
    )
    feed.assign_new()
    [tp] = consumer.incremental_assign.call_args.args[0]
    assert (tp.topic, tp.offset) == ("segment.events.track", OFFSET_END)
    consumer.get_watermark_offsets.assert_not_called()
    raw = LiveFeed(KafkaSettings(), raw=True, consumer_factory=lambda c: consumer)
    assert raw.event_topics[0] == "segment.raw.track"
    assert not any("raw" in t for t in feed.event_topics)


def test_the_consumer_config_commits_nothing() -> None:
    conf = feed_consumer_config(KafkaSettings())
    assert conf["enable.auto.commit"] is False
    assert conf["enable.auto.offset.store"] is False
    assert conf["group.id"] != feed_consumer_config(KafkaSettings())["group.id"]
