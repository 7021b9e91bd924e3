"""segflow tail's lines and JSON, and the follow loop against a feed over a spec'd consumer."""

from __future__ import annotations

import json
import threading
from typing import Any
from unittest.mock import MagicMock

import pytest
from confluent_kafka import Consumer

from observe.feed import EventSummary, FeedFilter, LiveFeed
from observe.tail import event_json, event_line, follow, property_summary
from runtime.settings import KafkaSettings
from schemas.codec import CLEAN_EVENT, AvroCodec
from schemas.errors import FatalError

T0 = 1_767_614_400_123  # 2026-01-05 12:00:00.123 UTC


def _summary(**kw: Any) -> EventSummary:
    base: dict[str, Any] = dict(
        seq=1,
        topic="segment.events.track",
        partition=2,
        offset=41,
        timestamp_ms=T0,
        call_type="track",
        source="web",
        message_id="m-1",
        event="Order Completed",
    )
    return EventSummary(**{**base, **kw})


def test_a_line_shows_time_type_name_source_ids_and_properties() -> None:
    record = {
        "type": "track",
        "userId": "u-1",
        "anonymousId": "a-1",
        "properties": {"plan": "pro", "total": 12.5, "items": [1, 2, 3], "address": {"x": 1}},
    }
    assert event_line(_summary(), record) == (
        "12:00:00.123  track     Order Completed           web  user=u-1 anon=a-1  "
        "plan=pro total=12.5 items=[3] address={…}"
    )
    assert event_line(_summary(event=None, source=""), None).split() == [
        "12:00:00.123",
        "track",
        "-",
        "-",
    ]


def test_identify_summarises_traits_and_long_values_are_cut() -> None:
    identify = {"type": "identify", "traits": {"email": "x" * 100}, "properties": {"p": 1}}
    assert property_summary(identify) == "email=" + "x" * 23 + "…"
    many = {"type": "track", "properties": {f"k{i}": i for i in range(40)}}
    assert len(property_summary(many)) == 80 and property_summary(many).endswith("…")
    assert property_summary({"type": "alias"}) == ""


def test_json_lines_carry_where_it_was_read_and_the_record() -> None:
    line = json.loads(event_json(_summary(), {"type": "track", "event": "Order Completed"}))
    assert line == {
        "topic": "segment.events.track",
        "partition": 2,
        "offset": 41,
        "kafka_time": "2026-01-05T12:00:00.123000+00:00",
        "record": {"type": "track", "event": "Order Completed"},
    }


class _Msg:
    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self._topic, self._offset, self._value = topic, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return 1, T0 + self._offset


def _clean(n: int, event: str, source: str) -> bytes:
    from tests.integration.sink_support import clean_event

    return AvroCodec().encode(CLEAN_EVENT, clean_event("track", n, event=event, source=source))


def test_follow_emits_matching_events_once_and_closes_the_consumer() -> None:
    consumer = MagicMock(spec_set=Consumer)
    meta = MagicMock()
    meta.topics = {"segment.events.track": MagicMock(error=None, partitions={0: None})}
    consumer.list_topics.return_value = meta
    topic = "segment.events.track"
    batches = [
        [_msg for _msg in (_Msg(topic, 0, _clean(0, "Order Completed", "web")),)],
        [
            _Msg(topic, 1, _clean(1, "Signed Up", "web")),
            _Msg(topic, 2, _clean(2, "Order Completed", "ios")),
        ],
        [_Msg(topic, 3, _clean(3, "Order Completed", "web"))],
    ]
    consumer.consume.side_effect = lambda **kw: batches.pop(0) if batches else []
    feed = LiveFeed(KafkaSettings(), backlog=0, consumer_factory=lambda conf: consumer)
    got: list[tuple[int, str | None]] = []
    emitted = follow(
        feed,
        FeedFilter(source="web", event="order"),
        lambda s, record: got.append((s.offset, (record or {}).get("event"))),
        limit=2,
        poll_s=0.01,
    )
    assert emitted == 2 and got == [(0, "Order Completed"), (3, "Order Completed")]
    consumer.close.assert_called_once()
    consumer.commit.assert_not_called()
    consumer.subscribe.assert_not_called()


def test_follow_ends_when_asked_to() -> None:
    consumer = MagicMock(spec_set=Consumer)
    consumer.list_topics.return_value = MagicMock(topics={})
    consumer.consume.return_value = []
    stop = threading.Event()
    stop.set()
    feed = LiveFeed(KafkaSettings(), consumer_factory=lambda conf: consumer)
    assert follow(feed, FeedFilter(), lambda s, r: None, stop=stop) == 0
    consumer.close.assert_called_once()


def test_a_feed_that_fails_is_an_error_not_a_silent_end() -> None:
    consumer = MagicMock(spec_set=Consumer)
    consumer.list_topics.return_value = MagicMock(topics={})
    consumer.consume.side_effect = RuntimeError("broken")
    feed = LiveFeed(KafkaSettings(), consumer_factory=lambda conf: consumer)
    with pytest.raises(FatalError, match="the live feed stopped: broken"):
        follow(feed, FeedFilter(), lambda s, r: None, poll_s=0.01)
