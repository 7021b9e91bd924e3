"""Batch merging, messageId, clock-skew correction, extra fields and keys of raw records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ingest.normalize import (
    extra_fields,
    merge_defaults,
    record_key,
    record_or_problem,
    to_raw_record,
)
from ingest.rejections import ItemProblem
from ingest.validation import EventFields, validate_event

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def raw(item: dict[str, Any], sent_at: datetime | None = None, **kw: Any) -> dict[str, Any]:
    fields = validate_event(item)
    assert isinstance(fields, EventFields), fields
    return to_raw_record(item, fields, "web", RECEIVED, sent_at, **kw)


def test_batch_context_and_integrations_merge_with_item_keys_winning() -> None:
    item = {"context": {"ip": "1.2.3.4", "locale": "de"}, "integrations": {"X": False}}
    merge_defaults(item, {"locale": "en", "library": {"name": "py"}}, {"All": True, "X": True})
    assert item["context"] == {"locale": "de", "library": {"name": "py"}, "ip": "1.2.3.4"}
    assert item["integrations"] == {"All": True, "X": False}
    bare: dict[str, Any] = {}
    merge_defaults(bare, {"a": 1}, None)
    assert bare == {"context": {"a": 1}}
    explicit_null: dict[str, Any] = {"context": None}
    merge_defaults(explicit_null, {"a": 1}, None)
    assert explicit_null == {"context": None}  # stays invalid: the model refuses null


def test_clock_skew_is_corrected_and_the_client_time_kept() -> None:
    # The client's clock is 1 h behind: it stamped the event 10 s before sending.
    rec = raw(
        {"type": "track", "userId": "u", "event": "e", "timestamp": "2024-05-01T11:00:00Z"},
        sent_at=datetime(2024, 5, 1, 11, 0, 10, tzinfo=UTC),
    )
    assert rec["originalTimestamp"] == datetime(2024, 5, 1, 11, 0, 0, tzinfo=UTC)
    assert rec["sentAt"] == datetime(2024, 5, 1, 11, 0, 10, tzinfo=UTC)
    assert rec["receivedAt"] == RECEIVED
    assert rec["timestamp"] == RECEIVED - timedelta(seconds=10)


def test_item_sent_at_and_original_timestamp_win_and_offsets_become_utc() -> None:
    rec = raw(
        {
            "type": "identify",
            "userId": "u",
            "timestamp": "2000-01-01T00:00:00Z",
            "originalTimestamp": "2024-05-01T13:59:00+02:00",
            "sentAt": "2024-05-01T14:00:00+02:00",
        },
        sent_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    assert rec["originalTimestamp"] == datetime(2024, 5, 1, 11, 59, tzinfo=UTC)
    assert rec["sentAt"].utcoffset() == timedelta(0)
    assert rec["timestamp"] == RECEIVED - timedelta(minutes=1)


def test_without_client_times_the_event_time_is_received_at() -> None:
    rec = raw({"type": "page", "anonymousId": "a", "name": "Home"})
    assert rec["timestamp"] == RECEIVED and rec["originalTimestamp"] is None
    naive = raw({"type": "page", "anonymousId": "a", "timestamp": "2024-05-01T11:00:00"})
    assert naive["originalTimestamp"] == datetime(2024, 5, 1, 11, tzinfo=UTC)
    assert naive["timestamp"] == naive["originalTimestamp"]  # no sentAt: no correction


def test_webhook_events_keep_the_timestamp_segment_corrected() -> None:
    rec = raw(
        {
            "type": "track",
            "userId": "u",
            "event": "e",
            "timestamp": "2024-05-01T10:00:00Z",
            "originalTimestamp": "2024-05-01T09:00:00Z",
            "sentAt": "2024-05-01T09:00:01Z",
            "receivedAt": "2024-05-01T10:00:01Z",
        },
        trust_timestamp=True,
    )
    assert rec["timestamp"] == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert rec["originalTimestamp"] == datetime(2024, 5, 1, 9, tzinfo=UTC)
    assert rec["receivedAt"] == RECEIVED


def test_message_id_kept_or_generated_unique() -> None:
    assert raw({"type": "track", "userId": "u", "event": "e", "messageId": "m"})["messageId"] == "m"
    generated = {
        raw({"type": "track", "userId": "u", "event": "e"})["messageId"] for _ in range(50)
    }
    assert len(generated) == 50 and all(0 < len(m) < 100 for m in generated)


def test_maps_travel_as_json_and_only_the_call_types_own_maps() -> None:
    rec = raw(
        {
            "type": "track",
            "userId": "u",
            "event": "e",
            "properties": {"n": 1.5, "s": "ü"},
            "traits": {"email": "x"},  # analytics.js drops these on track; we keep them in extra
            "context": {"ip": "1.2.3.4"},
        }
    )
    assert orjson.loads(rec["properties"]) == {"n": 1.5, "s": "ü"}
    assert rec["traits"] == "{}" and orjson.loads(rec["context"]) == {"ip": "1.2.3.4"}
    assert orjson.loads(rec["extra"]) == {"traits": {"email": "x"}}
    ident = raw({"type": "identify", "userId": "u", "traits": {"plan": "pro"}})
    assert orjson.loads(ident["traits"]) == {"plan": "pro"} and ident["properties"] == "{}"


def test_extra_keeps_unknown_fields_but_never_the_write_key() -> None:
    item = {
        "type": "track",
        "userId": "u",
        "event": "e",
        "writeKey": "secret",
        "version": 2,
        "_metadata": {"bundled": ["x"]},
        "name": "not a track field",
        "receivedAt": "2024-01-01T00:00:00Z",
    }
    assert extra_fields(item, "track") == {
        "version": 2,
        "_metadata": {"bundled": ["x"]},
        "name": "not a track field",
    }
    # a snake_case name pydantic took for a field is consumed, not extra
    assert extra_fields({"type": "track", "user_id": "u", "event": "e"}, "track") == {}
    assert extra_fields({"type": "track", "userId": "u", "user_id": "v"}, "track") == {
        "user_id": "v"
    }


def test_identifiers_by_type() -> None:
    alias = raw({"type": "alias", "previousId": "anon-1", "userId": "u-1"})
    assert (alias["previousId"], alias["userId"], record_key(alias)) == ("anon-1", "u-1", b"anon-1")
    group = raw({"type": "group", "userId": 7, "groupId": 99})
    assert (group["groupId"], group["userId"], record_key(group)) == ("99", "7", b"7")
    both = raw({"type": "track", "userId": "u", "anonymousId": "a", "event": "e"})
    assert record_key(both) == b"a"
    blank_anonymous = raw({"type": "track", "userId": "u", "anonymousId": " ", "event": "e"})
    assert record_key(blank_anonymous) == b"u"


def test_times_out_of_range_are_the_items_problem() -> None:
    item = {
        "type": "track",
        "userId": "u",
        "event": "e",
        "timestamp": "0001-01-01T00:00:00Z",
        "sentAt": "9999-01-01T00:00:00Z",
    }
    fields = validate_event(item)
    assert isinstance(fields, EventFields)
    problem = record_or_problem(item, fields, 4, "web", RECEIVED, None)
    assert isinstance(problem, ItemProblem)
    assert (problem.index, problem.code, problem.field) == (4, "invalid_timestamp", "timestamp")


def test_webhook_events_keep_segments_received_at_in_extra() -> None:
    item = {"type": "track", "userId": "u", "event": "e", "receivedAt": "2024-05-01T10:00:01Z"}
    assert extra_fields(item, "track", keep_received_at=True) == {
        "receivedAt": "2024-05-01T10:00:01Z"
    }
    assert extra_fields(item, "track") == {}


def test_the_client_ip_fills_context_ip_only_where_there_is_none() -> None:
    ip = "203.0.113.7"
    bare = raw({"type": "track", "userId": "u", "event": "e"}, client_ip=ip)
    assert orjson.loads(bare["context"]) == {"ip": ip}
    shared = {"locale": "en"}
    rec = raw({"type": "track", "userId": "u", "event": "e", "context": shared}, client_ip=ip)
    assert orjson.loads(rec["context"]) == {"locale": "en", "ip": ip}
    assert shared == {"locale": "en"}  # a batch's context, shared by its items, is not changed
    for own in ("198.51.100.1", "0.0.0.0", None):  # the client's own value, or its opt-out
        item = {"type": "track", "userId": "u", "event": "e", "context": {"ip": own}}
        assert orjson.loads(raw(item, client_ip=ip)["context"]) == {"ip": own}
    unknown = raw({"type": "track", "userId": "u", "event": "e"})
    assert unknown["context"] == "{}"
