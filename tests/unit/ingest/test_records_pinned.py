"""The records the edge writes for a fixed corpus of requests are pinned, byte for byte.

A request's body goes through what the edge's handler does with it (parse_object,
validate_envelope, prepare_records with the compiled raw_event writer) and its outcome, the
Kafka records (call type, key, value bytes) or the refusal (status and JSON body), is hashed.
The corpus mixes SDK-shaped events, every call type, batch contexts, client addresses,
suppressed users, timestamps with offsets and out of range, the validation corpus's odd values
and random nested maps under random limits, so that a change to the hot path that alters one
byte of one record or one refusal changes a digest. The digests were recorded with the edge
before its per-event CPU work (bench/results/ingest-hot-path.md); an intended change of the
records (a new raw_event version, a new rule) updates them, with the reason in the commit.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

import ingest.normalize
from ingest.normalize import utc
from ingest.records import RequestContext, prepare_records
from ingest.rejections import Rejection
from ingest.validation import parse_object, validate_envelope
from schemas.avro_compiled import compile_writer
from schemas.codec import RAW_EVENT, AvroCodec
from schemas.segment import DEFAULT_LIMITS, EventLimits

ENCODE = compile_writer(AvroCodec().latest(RAW_EVENT))
NOW = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SMALL = EventLimits(
    max_nesting_depth=5,
    max_identifier_length=12,
    max_name_length=12,
    max_key_length=9,
    max_keys_per_object=6,
    max_keys_per_event=30,
    max_context_copy_bytes=400,
)

PINNED = {
    "sdk_batches": "1cf860dc2a709a906fcc156c92f6f1a9958b04e1b37b6dd95d5d127e226c9bc4",
    "sdk_singles": "c935b0a1e475a4b059ada473f1a7a958439c03b2ae98fce2499674a57738a489",
    "fields": "361f1807372a04833912a2e9ca4ba9449c2fa61521955895fcf6d2bf95f4a852",
    "hostile": "5496dde6e4e1413fb81aeef649e1a4119e9c469a0b27de6a48c67ff5ab2185c1",
    "nested": "6a6485536fa4b19632863273a99182a8171bca95f4761b288d64eb6fb52a6d03",
    "times": "f713f8d27156b1207bfad8cf506560a63963be2883951a221cd758cc262efa09",
}


class Suppressed:
    def is_suppressed(self, user_id: str | None, anonymous_id: str | None) -> bool:
        return user_id == "gone-user" or anonymous_id == "gone-anon"


def outcome(
    data: bytes,
    batch: bool,
    limits: EventLimits = DEFAULT_LIMITS,
    suppressed: bool = False,
    **kw: Any,
) -> str:
    """One request as the edge's handler runs it, as one line of JSON."""
    suppressions = Suppressed() if suppressed else None
    try:
        body = parse_object(data)
        if batch:
            env = validate_envelope(body, 2500)
            ctx = RequestContext(
                "web",
                NOW,
                utc(env.sent_at),
                env.context,
                env.integrations,
                check_event_size=kw.pop("check_event_size", len(data) > 32 * 1024),
                limits=limits,
                **kw,
            )
            prepared = prepare_records(env.items, ctx, ENCODE, suppressions)
        else:
            ctx = RequestContext("web", NOW, limits=limits, **kw)
            prepared = prepare_records([body], ctx, ENCODE, suppressions)
        out: list[Any] = [
            "ok",
            [(r.call_type, r.key.hex(), r.value.hex()) for r in prepared.records],
            prepared.suppressed,
            prepared.accepted(),
        ]
    except Rejection as rejection:
        out = ["refused", rejection.status, rejection.body()]
    return json.dumps(out, sort_keys=True)


# ---------------------------------------------------------------------------- the corpus


def sdk_event(rng: random.Random) -> dict[str, Any]:
    """A 1-2 KB track call as analytics.js sends it."""
    return {
        "type": "track",
        "event": rng.choice(["Product Viewed", "Order Completed", "Searched"]),
        "userId": f"user-{rng.randint(1, 50_000)}",
        "anonymousId": str(uuid.UUID(int=rng.getrandbits(128))),
        "messageId": f"ajs-next-{uuid.UUID(int=rng.getrandbits(128)).hex}",
        "timestamp": (NOW - timedelta(milliseconds=rng.randint(10, 900))).isoformat(),
        "properties": {
            "order_id": f"ord-{rng.getrandbits(40)}",
            "revenue": round(rng.uniform(5, 500), 2),
            "currency": "EUR",
            "coupon": rng.choice([None, "SPRING"]),
            "products": [
                {"sku": f"SKU-{rng.getrandbits(20)}", "price": 9.5, "quantity": rng.randint(1, 3)}
                for _ in range(rng.randint(1, 5))
            ],
        },
        "context": {
            "ip": f"203.0.113.{rng.randint(1, 254)}",
            "library": {"name": "analytics.js", "version": "next-1.70.0"},
            "locale": rng.choice(["en-US", "de-DE"]),
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0",
            "page": {
                "path": "/checkout",
                "url": f"https://shop.example.com/c?s={rng.randint(1, 3)}",
            },
            "campaign": {"name": "spring_sale", "source": "newsletter", "medium": "email"},
        },
        "integrations": {"All": True},
    }


def vary(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    """Another call type, missing or null context fields, odd but valid values."""
    call_type = rng.choice(["track", "page", "screen", "identify", "group", "alias"])
    event["type"] = call_type
    roll = rng.random()
    if roll < 0.2:
        event["context"].pop("ip")
    elif roll < 0.3:
        event["context"]["ip"] = None
    elif roll < 0.4:
        event.pop("context")
    if rng.random() < 0.3:
        event["sentAt"] = (NOW - timedelta(seconds=rng.randint(0, 100))).isoformat()
    if rng.random() < 0.2:
        event["originalTimestamp"] = "2024-05-01T11:59:00.5+02:00"
    if rng.random() < 0.2:
        event.pop("messageId")
    if rng.random() < 0.1:
        event["userId"] = "gone-user"
    if rng.random() < 0.1:
        event["properties"]["note"] = 'quote " back \\ nul \x00 é ☃ \u2028'
    if rng.random() < 0.1:
        event["extra"] = {"x": [1, 2, {"y": None}]}
    if rng.random() < 0.1:
        event["writeKey"] = "k"
    if rng.random() < 0.05:
        event["receivedAt"] = "2024-05-01T11:00:00Z"
    if rng.random() < 0.1:
        event["userId"] = rng.choice([7, 2**62, "  "])
    if call_type == "group":
        event["groupId"] = rng.choice(["g-1", 42])
    if call_type == "alias":
        event["previousId"] = rng.choice(["p-1", 5, ""])
    if call_type in ("identify", "group"):
        event["traits"] = {"email": "a@b.c", "n": rng.randint(0, 2**62)}
    if call_type in ("page", "screen"):
        event["name"], event["category"] = "Home", rng.choice([None, "Docs"])
    return event


def sdk_batches() -> Iterator[str]:
    rng = random.Random(3)
    for i in range(12):
        events = [sdk_event(rng) for _ in range(100)]
        if i % 3 == 1:
            events = [vary(rng, e) for e in events]
        body = orjson.dumps({"batch": events, "sentAt": NOW.isoformat()})
        yield outcome(body, True, client_ip="127.0.0.1")
        yield outcome(body, True, suppressed=True, client_ip="2001:db8::1")
        yield outcome(body, True)


def sdk_singles() -> Iterator[str]:
    rng = random.Random(5)
    for _ in range(250):
        event = vary(rng, sdk_event(rng))
        data = orjson.dumps(event)
        yield outcome(data, False, suppressed=True, client_ip="203.0.113.9")
        yield outcome(data, False, call_type="track", client_ip="203.0.113.9")
        yield outcome(data, False, trust_timestamp=True)
        defaults = rng.choice(
            [{"library": {"name": "x"}, "ip": "1.1.1.1"}, {"app": {"v": 1}}, {}, None]
        )
        body = {"batch": [event, event], "sentAt": NOW.isoformat(), "integrations": {"A": False}}
        if defaults is not None:
            body["context"] = defaults
        yield outcome(orjson.dumps(body), True, client_ip="127.0.0.1", check_event_size=True)


BASES: list[dict[str, Any]] = [
    {"type": "track", "event": "Order Completed", "userId": "u-1", "messageId": "m-1"},
    {"type": "identify", "userId": "u-1", "traits": {"email": "a@b.c"}},
    {"type": "page", "anonymousId": "a-1", "name": "Home", "category": "Docs"},
    {"type": "screen", "userId": 42, "name": "Main", "properties": {}},
    {"type": "group", "userId": "u-1", "groupId": "g-1", "traits": {"name": "Acme"}},
    {"type": "alias", "previousId": "a-1", "userId": "u-1"},
]
FIELD_NAMES = [
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
    "user_id",
    "sent_at",
    "writeKey",
    "extraField",
]
FIELD_VALUES: list[Any] = [
    None,
    "",
    "  ",
    "x" * 99,
    "x" * 100,
    0,
    -3,
    1.5,
    True,
    [],
    {},
    {"name": 1},
    {"ip": None, "library": {"name": "n"}},
    {"user_agent": "x"},
    "2024-05-01T12:00:00Z",
    "2024-05-01T12:00:00",
    "2024-05-01T12:00:00.5+05:30",
    "2024-05-01",
    "2024-05-01T24:00:00Z",
    1714564800123,
    "track",
    "a\x00b",
    "k" * 20,
    2**63,
]


def fields() -> Iterator[str]:
    for i, (base, name, value) in enumerate(itertools.product(BASES, FIELD_NAMES, FIELD_VALUES)):
        item = json.loads(json.dumps(base))
        item[name] = value
        data = json.dumps(item).encode()
        limits = SMALL if i % 3 == 0 else DEFAULT_LIMITS
        yield outcome(data, False, limits, client_ip="10.0.0.1" if i % 2 else None)
        body = {"batch": [item], "context": {"ip": "9.9.9.9", "locale": "x"} if i % 4 else None}
        yield outcome(json.dumps(body).encode(), True, limits, client_ip="10.0.0.2")


HOSTILE: list[Any] = [
    None,
    True,
    0,
    2**63,
    2**64,
    10**40,
    1e300,
    "",
    "x" * 600,
    "a\x00b",
    "9999-12-31T23:59:59-23:00",
    "0001-01-01T00:00:00+23:00",
    "99999-01-01",
    10**17,
    [1, [2]],
    {"a": {"b": []}},
    {"library": {"name": 5}},
    {"campaign": "x"},
    "alias",
    {"k" * 600: 1},
    {"\x00": 1},
    orjson.loads(b'{"a":' * 300 + b"1" + b"}" * 300),
]


def hostile() -> Iterator[str]:
    rng = random.Random(13)
    names = FIELD_NAMES[:-3]
    for _ in range(1500):
        items = []
        for _ in range(rng.randint(1, 3)):
            item: dict[str, Any] = {
                "type": rng.choice(["track", "identify", "page", "group", "alias", "x"]),
                "userId": "u",
                "event": "e",
                "groupId": "g",
                "previousId": "p",
            }
            for _ in range(rng.randint(1, 4)):
                item[rng.choice(names)] = rng.choice(HOSTILE)
            items.append(item)
        if rng.random() < 0.5:
            data = json.dumps(items[0]).encode()
            yield outcome(data, False, call_type=rng.choice(["track", "group", None]))
        else:
            body: dict[str, Any] = {"batch": items}
            for _ in range(rng.randint(0, 2)):
                body[rng.choice(["context", "integrations", "sentAt"])] = rng.choice(HOSTILE)
            data = json.dumps(body).encode()
            limits = rng.choice([DEFAULT_LIMITS, SMALL])
            yield outcome(data, True, limits, client_ip="1.2.3.4", check_event_size=True)


KEYS = ["a", "bb", "ccccc", "dddddddddd", "k:1", "{[", 'q"', "s\\", "n\x00", "é" * 5]
SCALARS: list[Any] = [None, True, 1.5, "", "a:b{c}[d]", 'q"', "nul\x00", "ünï", 2**53, 2**63]


def nested_value(rng: random.Random, level: int) -> Any:
    roll = rng.random()
    if level < 8 and roll < 0.25:
        return {rng.choice(KEYS): nested_value(rng, level + 1) for _ in range(rng.randint(0, 5))}
    if level < 8 and roll < 0.4:
        return [nested_value(rng, level + 1) for _ in range(rng.randint(0, 4))]
    return rng.choice(SCALARS)


def nested() -> Iterator[str]:
    rng = random.Random(17)
    for _ in range(1500):
        value = {rng.choice(KEYS): nested_value(rng, 3) for _ in range(rng.randint(0, 4))}
        limits = EventLimits(
            max_nesting_depth=rng.randint(3, 9),
            max_key_length=rng.choice([3, 9, 30, 512]),
            max_keys_per_object=rng.randint(4, 12),
            max_keys_per_event=rng.randint(10, 40),
        )
        where = rng.choice(["properties", "context", "traits", "integrations", "other"])
        item: dict[str, Any] = {
            "type": rng.choice(["track", "identify"]),
            "event": "E",
            "userId": "u",
        }
        item[where] = value
        yield outcome(json.dumps(item).encode(), False, limits, client_ip="1.2.3.4")
        body = {"batch": [item], "context": {"p": value} if rng.random() < 0.3 else None}
        yield outcome(json.dumps(body).encode(), True, limits, check_event_size=True)


TIMES: list[Any] = [
    None,
    "2024-05-01T12:00:00Z",
    "2024-05-01T12:00:00.5+05:30",
    "2024-05-01T12:00:00",
    "9999-12-31T23:59:59-23:00",
    "0001-01-01T00:00:00+23:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    1714564800,
]


def times() -> Iterator[str]:
    for original, timestamp, sent_at, batch_sent_at in itertools.product(
        TIMES, TIMES, TIMES, [None, "2024-05-01T12:00:01Z", "0001-01-01T00:00:00+01:00"]
    ):
        item: dict[str, Any] = {"type": "track", "event": "E", "userId": "u", "messageId": "m"}
        for name, value in (
            ("originalTimestamp", original),
            ("timestamp", timestamp),
            ("sentAt", sent_at),
        ):
            if value is not None:
                item[name] = value
        data = orjson.dumps(item)
        if batch_sent_at is None:
            yield outcome(data, False, trust_timestamp=True)
            yield outcome(data, False)
        body: dict[str, Any] = {"batch": [item]}
        if batch_sent_at:
            body["sentAt"] = batch_sent_at
        yield outcome(orjson.dumps(body), True, client_ip="1.2.3.4")


SECTIONS: dict[str, Callable[[], Iterator[str]]] = {
    "sdk_batches": sdk_batches,
    "sdk_singles": sdk_singles,
    "fields": fields,
    "hostile": hostile,
    "nested": nested,
    "times": times,
}


def digest(section: str) -> tuple[str, dict[str, int]]:
    """sha256 of the section's outcome lines, and how many records and refusals it has."""
    sha = hashlib.sha256()
    counts = {"ok": 0, "refused": 0}
    for line in SECTIONS[section]():
        sha.update(line.encode() + b"\n")
        counts["ok" if line.startswith('["ok"') else "refused"] += 1
    return sha.hexdigest(), counts


@pytest.fixture(autouse=True)
def numbered_message_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated messageIds are random: number them instead, so the bytes can be pinned."""
    counter = itertools.count()
    monkeypatch.setattr(ingest.normalize, "new_message_id", lambda: f"segflow-{next(counter)}")


@pytest.mark.parametrize("section", list(SECTIONS))
def test_records_and_refusals_are_the_pinned_ones(section: str) -> None:
    found, counts = digest(section)
    assert counts["ok"] > 30 and (counts["refused"] > 100 or section.startswith("sdk")), counts
    assert found == PINNED[section], f"{section}: {found} {counts}"
