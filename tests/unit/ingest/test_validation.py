"""The edge's hot-path validation accepts and refuses exactly what the pydantic models do."""

from __future__ import annotations

import copy
import gzip
import itertools
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from ingest.rejections import ItemProblem, Rejection
from ingest.validation import (
    EventFields,
    _fields_of,
    decode_body,
    fast_fields,
    parse_object,
    validate_envelope,
    validate_event,
)
from schemas.segment import Event

ORACLE: TypeAdapter[Any] = TypeAdapter(Event)

BASE: dict[str, dict[str, Any]] = {
    "track": {
        "type": "track",
        "event": "Order Completed",
        "userId": "u-1",
        "anonymousId": "a-1",
        "messageId": "m-1",
        "timestamp": "2024-05-01T12:00:00.123Z",
        "properties": {"revenue": 9.5, "products": [{"sku": "s"}]},
        "context": {
            "ip": "203.0.113.7",
            "library": {"name": "analytics.js", "version": "2.1"},
            "campaign": {"name": "spring", "source": "mail"},
            "page": {"path": "/"},
            "active": True,
        },
        "integrations": {"All": True},
    },
    "identify": {"type": "identify", "userId": "u-1", "traits": {"email": "a@b.c"}},
    "page": {"type": "page", "anonymousId": "a-1", "name": "Home", "category": "Docs"},
    "screen": {"type": "screen", "userId": 42, "name": "Main", "properties": {}},
    "group": {"type": "group", "userId": "u-1", "groupId": "g-1", "traits": {"name": "Acme"}},
    "alias": {"type": "alias", "previousId": "a-1", "userId": "u-1"},
}

VALUES: list[Any] = [
    None,
    "",
    "   ",
    "x",
    "x" * 99,
    "x" * 100,
    0,
    7,
    -3,
    1.0,
    1.5,
    True,
    False,
    [],
    ["a"],
    {},
    {"name": 1},
    {"name": "n", "version": "1"},
    "2024-05-01T12:00:00Z",
    "2024-05-01T12:00:00",
    "2024-05-01T12:00:00.5+05:30",
    "2024-05-01T12:00:00.123456-00:00",
    "2024-05-01",
    "2024-05-01T12:00:00.1234567Z",
    "2024-05-01T24:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-05-01T12:00:00+24:00",
    "2024-05-01T12:00:00+23:59",
    "2024-05-01 12:00:00Z",
    "0000-01-01T00:00:00Z",
    "2024-05-01T12:00:60Z",
    1714564800,
    1714564800123,
    "1714564800",
    "track",
    "alias",
    "Track",
]

TOP_FIELDS = [
    "type",
    "messageId",
    "anonymousId",
    "userId",
    "previousId",
    "groupId",
    "event",
    "name",
    "category",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "receivedAt",
    "channel",
    "version",
    "context",
    "integrations",
    "properties",
    "traits",
    "message_id",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "sent_at",
    "received_at",
    "original_timestamp",
    "extraField",
]
CONTEXT_FIELDS = [
    "ip",
    "active",
    "library",
    "campaign",
    "page",
    "traits",
    "userAgent",
    "user_agent",
    "groupId",
    "group_id",
    "locale",
    "device",
]
_MISSING = object()


def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for base in BASE.values():
        cases.append(copy.deepcopy(base))
        for field, value in itertools.product(TOP_FIELDS, [*VALUES, _MISSING]):
            case = copy.deepcopy(base)
            if value is _MISSING:
                case.pop(field, None)
            else:
                case[field] = copy.deepcopy(value)
            cases.append(case)
        for field, value in itertools.product(CONTEXT_FIELDS, VALUES):
            case = copy.deepcopy(base)
            case.setdefault("context", {})[field] = copy.deepcopy(value)
            cases.append(case)
        for sub, (key, value) in itertools.product(
            ("library", "campaign"), [("name", 1), ("version", None), ("x", 1), ("term", 5)]
        ):
            case = copy.deepcopy(base)
            case.setdefault("context", {})[sub] = {key: value}
            cases.append(case)
        for user_id, anonymous_id in itertools.product(
            [None, "", " ", "u", 0, True], [None, "", "\t", "a", 5]
        ):
            case = copy.deepcopy(base)
            case["userId"], case["anonymousId"] = user_id, anonymous_id
            cases.append(case)
    return cases


CASES = _cases()


def _oracle(item: dict[str, Any]) -> EventFields | None:
    try:
        return _fields_of(ORACLE.validate_python(copy.deepcopy(item)))
    except ValidationError:
        return None


def test_the_corpus_is_large_and_mixed() -> None:
    accepted = sum(_oracle(c) is not None for c in CASES)
    assert len(CASES) > 5000
    assert 0.3 < accepted / len(CASES) < 0.9


def test_edge_accepts_and_refuses_exactly_what_the_models_do() -> None:
    mismatches: list[tuple[Any, ...]] = []
    for case in CASES:
        expected = _oracle(case)
        got = validate_event(copy.deepcopy(case))
        if expected is None:
            if not isinstance(got, ItemProblem):
                mismatches.append(("accepted", case))
        elif got != expected:
            mismatches.append(("differs", case, got, expected))
    assert mismatches == []


def test_fast_path_only_accepts_what_the_models_accept_with_the_same_values() -> None:
    fast_count = 0
    for case in CASES:
        fast = fast_fields(copy.deepcopy(case))
        if fast is None:
            continue
        fast_count += 1
        assert fast == _oracle(case), case
    assert fast_count > 1000  # the fast path is really taken for plain events


@pytest.mark.parametrize("call_type", list(BASE))
def test_fast_path_takes_every_plain_call_type(call_type: str) -> None:
    assert fast_fields(copy.deepcopy(BASE[call_type])) is not None


def test_fields_are_typed_and_identifiers_become_strings() -> None:
    fields = validate_event({"type": "screen", "userId": 42, "name": "Main"})
    assert isinstance(fields, EventFields)
    assert fields.user_id == "42" and fields.name == "Main" and fields.anonymous_id is None
    fields = validate_event({**BASE["track"], "timestamp": "2024-05-01T12:00:00.5+02:00"})
    assert isinstance(fields, EventFields)
    assert fields.timestamp == datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("item", "code", "field"),
    [
        ({"type": "track", "event": "e"}, "missing_identity", None),
        ({"type": "track", "userId": "u"}, "missing_event", "event"),
        ({"type": "track", "userId": "u", "event": ""}, "missing_event", "event"),
        ({"type": "tracks", "userId": "u"}, "unknown_type", "type"),
        ({"userId": "u"}, "missing_type", "type"),
        (
            {"type": "track", "userId": "u", "event": "e", "messageId": "m" * 100},
            "message_id_too_long",
            "messageId",
        ),
        ({"type": "group", "userId": "u"}, "missing_group_id", "groupId"),
        ({"type": "alias", "userId": "u"}, "missing_previous_id", "previousId"),
        (
            {"type": "track", "userId": "u", "event": "e", "properties": []},
            "invalid_field",
            "properties",
        ),
    ],
)
def test_refusals_have_machine_readable_codes(
    item: dict[str, Any], code: str, field: str | None
) -> None:
    problem = validate_event(item, index=3)
    assert isinstance(problem, ItemProblem)
    assert (problem.index, problem.code, problem.field) == (3, code, field)
    assert problem.message


def test_a_non_object_item_is_refused() -> None:
    problem = validate_event(["not", "an", "event"], index=2)
    assert isinstance(problem, ItemProblem) and problem.code == "not_an_object"


# ------------------------------------------------------------------ bodies


def test_decode_body_plain_gzip_and_deflate() -> None:
    data = orjson.dumps({"a": "b" * 100})
    assert decode_body(data, None, 1000) == data
    assert decode_body(gzip.compress(data), "gzip", 1000) == data
    assert decode_body(zlib.compress(data), "deflate", 1000) == data


def test_decode_body_refuses_what_inflates_past_the_limit() -> None:
    bomb = gzip.compress(b"{" + b" " * 5_000_000 + b"}")
    assert len(bomb) < 10_000
    with pytest.raises(Rejection) as info:
        decode_body(bomb, "gzip", 500_000)
    assert (info.value.status, info.value.code) == (400, "body_too_large")


@pytest.mark.parametrize(
    ("body", "encoding", "status", "code"),
    [
        (b"not gzip", "gzip", 400, "invalid_encoding"),
        (gzip.compress(b"{}", mtime=0)[:-6], "gzip", 400, "invalid_encoding"),
        (b"{}", "br", 415, "unsupported_encoding"),
        (b"x" * 101, None, 400, "body_too_large"),
    ],
)
def test_decode_body_refusals(body: bytes, encoding: str | None, status: int, code: str) -> None:
    with pytest.raises(Rejection) as info:
        decode_body(body, encoding, 100)
    assert (info.value.status, info.value.code) == (status, code)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"{", "invalid_json"),
        (b"[1]", "not_an_object"),
        (b"\xff", "invalid_json"),
        (b"", "invalid_json"),
        (b'{"a": NaN}', "invalid_json"),
    ],
)
def test_parse_object_refusals(data: bytes, code: str) -> None:
    with pytest.raises(Rejection) as info:
        parse_object(data)
    assert info.value.code == code and info.value.status == 400


def test_envelope_plain_and_through_the_model() -> None:
    env = validate_envelope(
        {"batch": [{}], "sentAt": "2024-05-01T12:00:00Z", "writeKey": "k", "context": {"a": 1}},
        2500,
    )
    assert env.items == [{}] and env.write_key == "k" and env.context == {"a": 1}
    assert env.sent_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    env = validate_envelope({"batch": [], "sentAt": 1714564800}, 2500)
    assert env.sent_at == datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "missing_batch"),
        ({"batch": {}}, "invalid_batch"),
        ({"batch": [], "context": []}, "invalid_batch"),
        ({"batch": [], "sentAt": "yesterday"}, "invalid_batch"),
        ({"batch": [{}] * 11}, "too_many_events"),
    ],
)
def test_envelope_refusals(body: dict[str, Any], code: str) -> None:
    with pytest.raises(Rejection) as info:
        validate_envelope(body, 10)
    assert info.value.code == code


# ------------------------------------------------------------------ values that cannot travel


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"18446744073709551616", 2**64),  # orjson alone: 1.8446744073709552e19
        (b"-9223372036854775809", -(2**63) - 1),
        (b"9" * 40, int("9" * 40)),
        (b"9223372036854775807", 2**63 - 1),
        (b"1.5e300", 1.5e300),
        (b'"12345678901234567890"', "12345678901234567890"),
    ],
)
def test_parse_json_keeps_integers_exact(text: bytes, value: object) -> None:
    parsed = parse_object(b'{"properties":{"n":' + text + b"}}")
    got = parsed["properties"]["n"]
    assert got == value and type(got) is type(value)


def test_a_deep_body_with_a_long_number_still_parses() -> None:
    # past Python's recursion limit the standard library gives up; orjson's value stays
    body = b'{"n":' + b"1" * 25 + b',"d":' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert parse_object(body)["n"] == float("1" * 25)


@pytest.mark.parametrize("value", [True, False, 1.0, 1.5, [1], {"a": 1}])
def test_identifiers_are_strings_or_integers_only(value: object) -> None:
    problem = validate_event({"type": "track", "event": "e", "userId": value, "anonymousId": "a"})
    assert isinstance(problem, ItemProblem) and problem.field == "userId"


@pytest.mark.parametrize("sent_at", ["9999-12-31T23:59:59-23:00", "0001-01-01T00:00:00+23:00"])
def test_an_envelope_sent_at_utc_cannot_hold_is_refused(sent_at: str) -> None:
    with pytest.raises(Rejection) as info:
        validate_envelope({"batch": [], "sentAt": sent_at}, 10)
    assert (info.value.status, info.value.code) == (400, "invalid_batch")
    assert info.value.message.startswith("sentAt:")


def test_envelope_sent_at_is_utc() -> None:
    env = validate_envelope({"batch": [], "sentAt": "2024-05-01T14:00:00+02:00"}, 10)
    assert env.sent_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert env.sent_at.utcoffset() == timedelta(0)
