"""All or nothing per request; suppressed users dropped and counted; records decodable."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.normalize import utc
from ingest.records import RequestContext, prepare_records
from ingest.rejections import Rejection
from ingest.validation import parse_object, validate_envelope
from schemas.avro_compiled import compile_writer
from schemas.codec import RAW_EVENT, AvroCodec
from schemas.errors import CodecError
from schemas.segment import EventLimits

CODEC = AvroCodec()
ENCODE = compile_writer(CODEC.latest(RAW_EVENT))
NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


class Suppressed:
    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)

    def is_suppressed(self, user_id: str | None, anonymous_id: str | None) -> bool:
        return user_id in self.ids or anonymous_id in self.ids


def batch_ctx(**kw: Any) -> RequestContext:
    return RequestContext("web", NOW, **kw)


def test_a_valid_batch_becomes_records_of_every_type() -> None:
    items: list[dict[str, Any]] = [
        {"type": "track", "userId": "u", "event": "e"},
        {"type": "identify", "userId": "u", "traits": {"a": 1}},
        {"type": "page", "anonymousId": "a"},
        {"type": "screen", "anonymousId": "a"},
        {"type": "group", "userId": "u", "groupId": "g"},
        {"type": "alias", "userId": "u", "previousId": "a"},
    ]
    out = prepare_records(items, batch_ctx(context={"library": {"name": "py"}}), ENCODE)
    assert [r.call_type for r in out.records] == [i["type"] for i in items]
    assert out.accepted() == dict.fromkeys(
        ["track", "identify", "page", "screen", "group", "alias"], 1
    )
    first = CODEC.decode(RAW_EVENT, out.records[0].value)
    assert first["source"] == "web" and first["event"] == "e"
    assert orjson.loads(first["context"]) == {"library": {"name": "py"}}
    assert [r.key for r in out.records] == [b"u", b"u", b"a", b"a", b"u", b"a"]


def test_one_bad_item_refuses_the_whole_batch_naming_every_bad_item() -> None:
    items = [
        {"type": "track", "userId": "u", "event": "ok"},
        {"type": "track", "userId": "u"},
        "not an object",
        {"type": "track", "userId": "u", "event": "ok"},
        {"type": "nope", "userId": "u"},
        {"type": "identify"},
    ]
    with pytest.raises(Rejection) as info:
        prepare_records(items, batch_ctx(), ENCODE)
    rejection = info.value
    assert (rejection.status, rejection.code) == (400, "invalid_events")
    assert [(p.index, p.code) for p in rejection.problems] == [
        (1, "missing_event"),
        (2, "not_an_object"),
        (4, "unknown_type"),
        (5, "missing_identity"),
    ]
    body = rejection.body()
    assert body["success"] is False and "nothing was written" in body["message"]
    assert body["errors"][0] == {
        "index": 1,
        "code": "missing_event",
        "field": "event",
        "message": "event: Field required",
    }


def test_the_path_sets_the_type_of_single_events() -> None:
    out = prepare_records(
        [{"type": "identify", "userId": "u", "event": "e"}], batch_ctx(call_type="track"), ENCODE
    )
    assert out.records[0].call_type == "track"


def test_oversize_events_are_refused_by_index() -> None:
    small = {"type": "track", "userId": "u", "event": "e"}
    big = {"type": "track", "userId": "u", "event": "e", "properties": {"x": "y" * 40_000}}
    ctx = batch_ctx(check_event_size=True, max_event_bytes=32 * 1024)
    with pytest.raises(Rejection) as info:
        prepare_records([small, big], ctx, ENCODE)
    assert [(p.index, p.code) for p in info.value.problems] == [(1, "event_too_large")]
    assert len(prepare_records([small], ctx, ENCODE).records) == 1


def test_suppressed_users_are_dropped_and_counted() -> None:
    items = [
        {"type": "track", "userId": "gone", "event": "e"},
        {"type": "track", "anonymousId": "gone-device", "event": "e"},
        {"type": "alias", "userId": "new", "previousId": "gone"},
        {"type": "identify", "userId": "stays"},
    ]
    out = prepare_records(items, batch_ctx(), ENCODE, Suppressed("gone", "gone-device"))
    assert [r.call_type for r in out.records] == ["identify"]
    assert out.suppressed == {"track": 2, "alias": 1}


def test_an_empty_batch_writes_nothing_and_succeeds() -> None:
    assert prepare_records([], batch_ctx(), ENCODE).records == []


# ------------------------------------------------------------------ limits (ingest/limits.py)

SMALL = EventLimits(max_nesting_depth=4, max_identifier_length=8, max_context_copy_bytes=1000)


def test_items_past_the_limits_are_refused_by_index_and_field() -> None:
    deep = orjson.loads(
        b'{"type":"track","userId":"u","event":"e","properties":' + b"[" * 600 + b"]" * 600 + b"}"
    )
    items: list[Any] = [
        {"type": "track", "userId": "u", "event": "ok"},
        deep,  # deeper than JSON encoding goes: refused before anything encodes it
        {"type": "track", "userId": "u" * 9, "event": "e"},
        {"type": "track", "userId": "u", "event": "e", "properties": {"n": 2**64}},
    ]
    with pytest.raises(Rejection) as info:
        prepare_records(items, batch_ctx(limits=SMALL, check_event_size=True), ENCODE)
    assert [(p.index, p.code, p.field) for p in info.value.problems] == [
        (1, "too_deep", "properties[0][0][0]"),
        (2, "identifier_too_long", "userId"),
        (3, "number_out_of_range", "properties.n"),
    ]


def test_the_batch_context_counts_in_each_merged_item() -> None:
    # the context is fine on its own; copied into an item it makes the item too deep
    context: dict[str, Any] = {"app": {"a": {}}}
    item = {"type": "track", "userId": "u", "event": "e", "context": {"page": {}}}
    assert prepare_records([dict(item)], batch_ctx(context=context, limits=SMALL), ENCODE).records
    deep_context: dict[str, Any] = {"app": {"a": {"b": {}}}}
    with pytest.raises(Rejection) as info:
        prepare_records([dict(item)], batch_ctx(context=deep_context, limits=SMALL), ENCODE)
    assert (info.value.code, info.value.message) == (
        "invalid_batch",
        "context.app.a.b: nested deeper than 4 levels (the event is level 1)",
    )


def test_the_merged_item_must_fit_max_event_bytes() -> None:
    context = {"blob": "x" * 20_000}
    item = {"type": "track", "userId": "u", "event": "e", "properties": {"y": "y" * 20_000}}
    ctx = batch_ctx(context=context, check_event_size=True, max_event_bytes=32 * 1024)
    with pytest.raises(Rejection) as info:
        prepare_records([item], ctx, ENCODE)
    assert [(p.index, p.code) for p in info.value.problems] == [(0, "event_too_large")]


def test_a_batch_context_cannot_be_copied_into_unbounded_bytes() -> None:
    context = {"blob": "x" * 400}  # ~411 bytes of JSON
    items = [{"type": "track", "userId": "u", "event": "e"} for _ in range(3)]
    limits = EventLimits(max_context_copy_bytes=1000)
    assert (
        len(prepare_records(items[:2], batch_ctx(context=context, limits=limits), ENCODE).records)
        == 2
    )
    with pytest.raises(Rejection) as info:
        prepare_records(items, batch_ctx(context=context, limits=limits), ENCODE)
    assert (info.value.status, info.value.code) == (400, "context_copy_too_large")


def test_an_event_the_codec_refuses_is_the_items_problem_not_a_crash() -> None:
    def encode(record: dict[str, Any]) -> bytes:
        if record["event"] == "bad":
            raise CodecError("record does not fit raw_event v2")
        return ENCODE(record)

    items = [{"type": "track", "userId": "u", "event": e} for e in ("ok", "bad", "ok")]
    with pytest.raises(Rejection) as info:
        prepare_records(items, batch_ctx(), encode)
    assert [(p.index, p.code) for p in info.value.problems] == [(1, "unencodable")]


# ------------------------------------------------------------------ random hostile requests

_FIELDS = [
    "type",
    "userId",
    "anonymousId",
    "event",
    "name",
    "category",
    "groupId",
    "previousId",
    "messageId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "receivedAt",
    "context",
    "integrations",
    "properties",
    "traits",
    "channel",
    "version",
    "user_id",
    "sent_at",
]
_VALUES: list[Any] = [
    None,
    True,
    0,
    2**63,
    2**64,
    10**40,
    1.5,
    1e300,
    "",
    " ",
    "x" * 600,
    "a\x00b",
    "9999-12-31T23:59:59-23:00",
    "0001-01-01T00:00:00+23:00",
    "2024-05-01T12:00:00Z",
    "99999-01-01",
    1714564800,
    10**17,
    [],
    [1, [2]],
    {},
    {"a": {"b": []}},
    {"library": {"name": 5}},
    {"campaign": "x"},
    {"page": []},
    "alias",
    {"k" * 600: 1},
    {"\x00": 1},
    orjson.loads(b'{"a":' * 300 + b"1" + b"}" * 300),  # deeper than JSON encoding goes
]


def _random_event(rng: random.Random) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": rng.choice(["track", "identify", "page", "screen", "group", "alias", "x"]),
        "userId": "u",
        "event": "e",
        "groupId": "g",
        "previousId": "p",
    }
    for _ in range(rng.randint(1, 4)):
        event[rng.choice(_FIELDS)] = rng.choice(_VALUES)
    return event


def test_random_hostile_requests_get_records_or_a_400_never_an_error() -> None:
    """What the edge's handler does with a body, on random bad values in every field."""
    rng = random.Random(13)
    outcomes = {"records": 0, "refused": 0}
    for _ in range(2_000):
        single = rng.random() < 0.5
        if single:
            body: dict[str, Any] = _random_event(rng)
        else:
            body = {"batch": [_random_event(rng) for _ in range(rng.randint(0, 3))]}
            for _ in range(rng.randint(0, 2)):
                body[rng.choice(["context", "integrations", "sentAt", "batch"])] = rng.choice(
                    _VALUES
                )
        data = json.dumps(body).encode()  # exact integers, as a client sends them
        try:
            parsed = parse_object(data)
            if single:
                ctx = batch_ctx(call_type=rng.choice(["track", "group", "alias"]))
                prepare_records([parsed], ctx, ENCODE)
            else:
                env = validate_envelope(parsed, 2500)
                ctx = batch_ctx(
                    sent_at=utc(env.sent_at),  # as the edge does
                    context=env.context,
                    integrations=env.integrations,
                    check_event_size=True,
                )
                prepare_records(env.items, ctx, ENCODE)
            outcomes["records"] += 1
        except Rejection as rejection:
            assert rejection.status == 400, rejection
            outcomes["refused"] += 1
    assert min(outcomes.values()) > 200, outcomes
