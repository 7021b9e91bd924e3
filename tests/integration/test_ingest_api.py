"""The edge on the shared broker, driven by the real Segment Python SDK and plain HTTP.

Every test reads what reached the raw topics back with the AvroCodec. The module's topics have
one partition each, so "nothing of a refused request was written" is checked by sending a
valid marker event afterwards and finding it to be the next record of the topic.
"""

from __future__ import annotations

import base64
import gzip
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import uvicorn
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from segment.analytics.client import Client
from segment.analytics.request import APIError

from ingest.server import build_app, uvicorn_config
from ingest.settings import IngestSettings
from ingest.webhook import signature
from runtime.rules import load_rules
from runtime.settings import KafkaSettings
from runtime.suppressions import publish_suppressions
from runtime.topic_admin import create_topics, expected_topics
from schemas.codec import RAW_EVENT, AvroCodec
from schemas.topics import CALL_TYPES, HEADER_REQUEST_ID, HEADER_SOURCE, Topics
from tests.integration.conftest import free_port, unique_name

pytestmark = pytest.mark.integration

CODEC = AvroCodec()
RULES_YAML = """
sources:
  - {name: web, write_keys: [web-key]}
  - {name: limited, write_keys: [limited-key], rate_limit_per_s: 1}
"""
FORGOTTEN = "forgotten-user"
WEBHOOK_SECRET = "webhook-s3cret"


@dataclass
class Edge:
    url: str
    kafka: KafkaSettings
    topics: Topics
    registry: CollectorRegistry

    def post(self, path: str, body: Any, key: str | None = "web-key", **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        return requests.post(self.url + path, data=data, headers=headers, timeout=30, **kw)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def run_edge(settings: IngestSettings, rules_path: Path) -> Iterator[tuple[Any, CollectorRegistry]]:
    registry = CollectorRegistry()
    app, _ = build_app(settings, load_rules(rules_path), registry)
    server = uvicorn.Server(uvicorn_config(app, settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "the edge did not start"
        assert time.monotonic() < deadline, "the edge did not start in 60 s"
        time.sleep(0.05)
    yield app, registry
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def edge(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=unique_name("ingest") + ".")
    create_topics(kafka, expected_topics(kafka.topics, partitions=1))
    publish_suppressions(kafka, {FORGOTTEN: ["forgotten-device"]}, reason="test")
    rules = tmp_path_factory.mktemp("rules") / "rules.yaml"
    rules.write_text(RULES_YAML)
    port = free_port()
    settings = IngestSettings(
        host="127.0.0.1",
        port=port,
        kafka=kafka,
        produce_timeout_s=10,
        webhook_secret=SecretStr(WEBHOOK_SECRET),
        webhook_source="web",
    )
    for _, registry in run_edge(settings, rules):
        yield Edge(f"http://127.0.0.1:{port}", kafka, kafka.topics, registry)


class TopicReader:
    """Reads one raw topic (one partition) from where the last read stopped."""

    def __init__(self, edge: Edge, call_type: str) -> None:
        self.topic = edge.topics.raw(call_type)
        self.consumer = Consumer(
            {
                "bootstrap.servers": edge.kafka.bootstrap,
                "group.id": unique_name("ingest-test"),
                "enable.auto.commit": False,
            }
        )
        _low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=10)
        self.consumer.assign([TopicPartition(self.topic, 0, high)])

    def read(self, n: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            record = CODEC.decode(RAW_EVENT, msg.value())
            record["_key"] = msg.key()
            record["_headers"] = dict(msg.headers() or [])
            out.append(record)
        assert len(out) == n, f"{len(out)} of {n} records arrived on {self.topic}"
        return out

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def readers(edge: Edge) -> Iterator[dict[str, TopicReader]]:
    by_type = {ct: TopicReader(edge, ct) for ct in CALL_TYPES}
    yield by_type
    for reader in by_type.values():
        reader.close()


def sdk(edge: Edge, **kw: Any) -> Client:
    return Client("web-key", host=edge.url, sync_mode=True, max_retries=0, **kw)


def _close(a: datetime, b: datetime, seconds: float = 5.0) -> bool:
    return abs(a - b) <= timedelta(seconds=seconds)


# ------------------------------------------------------------------ the SDK, six call types


def test_the_segment_sdk_sends_all_six_call_types_and_every_field_arrives(
    edge: Edge, readers: dict[str, TopicReader]
) -> None:
    client = sdk(edge)
    context = {"ip": "203.0.113.9", "locale": "de-DE", "page": {"path": "/pricing"}}
    when = datetime.now(UTC) - timedelta(minutes=5)
    sent = {
        "track": client.track(
            user_id="u-42",
            anonymous_id="anon-42",
            event="Order Completed",
            properties={"revenue": 99.5, "products": [{"sku": "s-1", "qty": 2}], "ok": True},
            context=context,
            integrations={"Amplitude": False},
            timestamp=when,
        )[1],
        "identify": client.identify(
            user_id="u-42", traits={"email": "ada@example.com", "plan": "pro"}, context=context
        )[1],
        "page": client.page(
            anonymous_id="anon-42", category="Docs", name="Pricing", properties={"path": "/p"}
        )[1],
        "screen": client.screen(user_id="u-42", name="Home", properties={"tab": 2})[1],
        "group": client.group(
            user_id="u-42", group_id="acme", traits={"name": "Acme", "employees": 50}
        )[1],
        "alias": client.alias(previous_id="anon-42", user_id="u-42")[1],
    }
    records = {ct: readers[ct].read(1)[0] for ct in CALL_TYPES}
    now = datetime.now(UTC)
    for ct, msg in sent.items():
        rec = records[ct]
        assert rec["type"] == ct and rec["source"] == "web"
        assert rec["messageId"] == msg["messageId"]
        assert rec["_headers"][HEADER_SOURCE] == b"web" and rec["_headers"][HEADER_REQUEST_ID]
        assert orjson.loads(rec["context"])["library"]["name"] == "analytics-python"
        assert _close(rec["receivedAt"], now, 30)
        assert rec["sentAt"] is not None
        assert rec["originalTimestamp"] == datetime.fromisoformat(msg["timestamp"])
    track = records["track"]
    assert (track["userId"], track["anonymousId"], track["event"]) == (
        "u-42",
        "anon-42",
        "Order Completed",
    )
    assert track["_key"] == b"anon-42"
    assert orjson.loads(track["properties"]) == {
        "revenue": 99.5,
        "products": [{"sku": "s-1", "qty": 2}],
        "ok": True,
    }
    ctx = orjson.loads(track["context"])
    assert ctx["ip"] == "203.0.113.9" and ctx["page"] == {"path": "/pricing"}
    assert orjson.loads(track["integrations"]) == {"Amplitude": False}
    # the SDK's clock is ours: the skew correction moves the event by (at most) the transit time
    assert _close(track["timestamp"], when, 5)
    assert orjson.loads(records["identify"]["traits"]) == {
        "email": "ada@example.com",
        "plan": "pro",
    }
    assert records["identify"]["_key"] == b"u-42"
    page = records["page"]
    assert (page["name"], page["category"], page["anonymousId"]) == ("Pricing", "Docs", "anon-42")
    assert orjson.loads(page["properties"]) == {"path": "/p"}
    assert orjson.loads(records["screen"]["properties"]) == {"tab": 2}
    group = records["group"]
    assert group["groupId"] == "acme"
    assert orjson.loads(group["traits"]) == {"name": "Acme", "employees": 50}
    alias = records["alias"]
    assert (alias["previousId"], alias["userId"], alias["_key"]) == ("anon-42", "u-42", b"anon-42")
    assert edge.metric("segflow_ingest_events_total", call_type="alias", outcome="accepted") >= 1


def test_sdk_batches_with_gzip_in_the_background(
    edge: Edge, readers: dict[str, TopicReader]
) -> None:
    client = Client("web-key", host=edge.url, gzip=True, upload_size=100, upload_interval=0.05)
    ids = [
        client.track(user_id=f"u-{i}", event="Clicked", properties={"i": i})[1]["messageId"]
        for i in range(250)
    ]
    client.flush()
    client.join()
    got = readers["track"].read(250)
    assert sorted(r["messageId"] for r in got) == sorted(ids)


# ------------------------------------------------------------------ HTTP details


def test_clock_skew_and_batch_context_merge(edge: Edge, readers: dict[str, TopicReader]) -> None:
    # A device whose clock is 2 h behind: it stamped the event 30 s before sending the batch.
    skewed = datetime.now(UTC) - timedelta(hours=2)
    body = {
        "batch": [
            {
                "type": "track",
                "userId": "u",
                "event": "Late",
                "context": {"locale": "fr"},
                "timestamp": (skewed - timedelta(seconds=30)).isoformat(),
            },
            {"type": "identify", "userId": "u"},
        ],
        "context": {"locale": "en", "app": {"name": "shop"}},
        "integrations": {"All": False},
        "sentAt": skewed.isoformat(),
    }
    assert edge.post("/v1/batch", body).status_code == 200
    track = readers["track"].read(1)[0]
    identify = readers["identify"].read(1)[0]
    assert _close(track["timestamp"], track["receivedAt"] - timedelta(seconds=30), 0.001)
    assert track["originalTimestamp"] == skewed - timedelta(seconds=30)
    # context.ip: the edge fills in the address of the connection (this test's)
    shop = {"app": {"name": "shop"}, "ip": "127.0.0.1"}
    assert orjson.loads(track["context"]) == {"locale": "fr", **shop}
    assert orjson.loads(identify["context"]) == {"locale": "en", **shop}
    assert orjson.loads(identify["integrations"]) == {"All": False}
    assert identify["messageId"]  # generated


def test_analytics_js_short_paths_with_cors(edge: Edge, readers: dict[str, TopicReader]) -> None:
    event = {
        "type": "page",
        "anonymousId": "browser-1",
        "writeKey": "web-key",
        "properties": {"url": "https://shop.example/"},
        "_metadata": {"bundled": ["x"]},
    }
    resp = edge.post(
        "/v1/p",
        orjson.dumps(event),
        key=None,
        headers={"Content-Type": "text/plain", "Origin": "https://shop.example"},
    )
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "*"
    batch = {
        "writeKey": "web-key",
        "sentAt": datetime.now(UTC).isoformat(),
        "batch": [{"type": "track", "anonymousId": "browser-1", "event": "Viewed"}],
    }
    assert edge.post("/v1/b", orjson.dumps(batch), key=None).status_code == 200
    page = readers["page"].read(1)[0]
    assert orjson.loads(page["extra"]) == {"_metadata": {"bundled": ["x"]}}
    assert readers["track"].read(1)[0]["event"] == "Viewed"


@pytest.mark.parametrize(
    ("path", "body", "key", "status", "code"),
    [
        ("/v1/track", b"{oops", "web-key", 400, "invalid_json"),
        ("/v1/track", {"event": "No Identity"}, "web-key", 400, "invalid_events"),
        ("/v1/track", {"userId": "u"}, "web-key", 400, "invalid_events"),
        (
            "/v1/batch",
            {
                "batch": [
                    {"type": "track", "userId": "u", "event": "ok"},
                    {"type": "purchase", "userId": "u"},
                ]
            },
            "web-key",
            400,
            "invalid_events",
        ),
        (
            "/v1/batch",
            {
                "batch": [
                    {
                        "type": "track",
                        "userId": "u",
                        "event": "big",
                        "properties": {"x": "y" * 33_000},
                    }
                ]
            },
            "web-key",
            400,
            "invalid_events",
        ),
        (
            "/v1/batch",
            {"batch": [{"type": "track", "userId": "u", "event": "e"}] * 2501},
            "web-key",
            400,
            "too_many_events",
        ),
        (
            "/v1/batch",
            {"batch": [{"type": "track", "userId": "u", "event": "x" * 1000}] * 600},
            "web-key",
            400,
            "body_too_large",
        ),
        (
            "/v1/track",
            {"userId": "u", "event": "e", "messageId": "m" * 100},
            "web-key",
            400,
            "invalid_events",
        ),
        ("/v1/track", {"userId": "u", "event": "e"}, None, 401, "missing_write_key"),
        ("/v1/track", {"userId": "u", "event": "e"}, "stolen", 401, "unknown_write_key"),
    ],
)
def test_refused_requests_write_nothing(
    edge: Edge,
    readers: dict[str, TopicReader],
    path: str,
    body: Any,
    key: str | None,
    status: int,
    code: str,
) -> None:
    resp = edge.post(path, body, key=key)
    assert resp.status_code == status
    assert resp.json()["code"] == code and resp.json()["success"] is False
    marker = {"userId": "u", "event": "Marker", "messageId": uuid.uuid4().hex}
    assert edge.post("/v1/track", marker).status_code == 200
    (next_record,) = readers["track"].read(1)
    assert next_record["messageId"] == marker["messageId"]


def test_gzip_body(edge: Edge, readers: dict[str, TopicReader]) -> None:
    body = gzip.compress(orjson.dumps({"batch": [{"type": "screen", "userId": "u", "name": "Z"}]}))
    assert edge.post("/v1/batch", body, headers={"Content-Encoding": "gzip"}).status_code == 200
    assert readers["screen"].read(1)[0]["name"] == "Z"


def test_rate_limit_answers_429_with_retry_after(
    edge: Edge, readers: dict[str, TopicReader]
) -> None:
    # 1 event/s: a full bucket lets a batch of 20 through and owes 19 s, so the requests after
    # it are refused however slowly they follow (at 20/s a slow machine refilled the bucket
    # before the SDK's request)
    batch = {"batch": [{"type": "group", "userId": "u", "groupId": f"g{i}"} for i in range(20)]}
    assert edge.post("/v1/batch", batch, key="limited-key").status_code == 200
    resp = edge.post("/v1/batch", batch, key="limited-key")
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert resp.json()["code"] == "rate_limited"
    with pytest.raises(APIError) as info:  # the SDK sees it too, and does not retry it blindly
        Client("limited-key", host=edge.url, sync_mode=True).group(user_id="u", group_id="g")
    assert info.value.status == 429
    assert len(readers["group"].read(20)) == 20
    assert edge.metric("segflow_ingest_requests_total", endpoint="batch", outcome="rate_limited")


def test_suppressed_users_are_dropped_and_counted(
    edge: Edge, readers: dict[str, TopicReader]
) -> None:
    before = edge.metric("segflow_ingest_events_total", call_type="track", outcome="suppressed")
    client = sdk(edge)
    client.track(user_id=FORGOTTEN, event="Should Vanish")
    client.track(anonymous_id="forgotten-device", event="Should Vanish Too")
    kept = client.track(user_id="someone-else", event="Kept")[1]
    assert readers["track"].read(1)[0]["messageId"] == kept["messageId"]
    after = edge.metric("segflow_ingest_events_total", call_type="track", outcome="suppressed")
    assert after - before == 2


def test_signed_webhook_events_from_segment(edge: Edge, readers: dict[str, TopicReader]) -> None:
    # What Segment's Webhooks destination posts: one processed event, already skew-corrected.
    event = orjson.dumps(
        {
            "type": "identify",
            "userId": "hooked",
            "traits": {"plan": "team"},
            "messageId": "segment-webhook-1",
            "timestamp": "2024-05-01T10:00:00.000Z",
            "originalTimestamp": "2024-05-01T09:00:00.000Z",
            "sentAt": "2024-05-01T09:00:01.000Z",
            "receivedAt": "2024-05-01T10:00:01.000Z",
            "projectId": "p1",
            "version": 2,
        }
    )
    unsigned = edge.post("/v1/webhook", event, key=None)
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "missing_signature")
    forged = edge.post("/v1/webhook", event, key=None, headers={"X-Signature": "ab" * 20})
    assert forged.status_code == 401
    sig = signature(WEBHOOK_SECRET.encode(), event)
    resp = edge.post("/v1/webhook", event, key=None, headers={"X-Signature": sig})
    assert resp.status_code == 200
    (record,) = readers["identify"].read(1)
    assert (record["messageId"], record["source"], record["userId"]) == (
        "segment-webhook-1",
        "web",
        "hooked",
    )
    assert record["timestamp"] == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert record["originalTimestamp"] == datetime(2024, 5, 1, 9, tzinfo=UTC)
    assert orjson.loads(record["extra"]) == {
        "projectId": "p1",
        "version": 2,
        "receivedAt": "2024-05-01T10:00:01.000Z",  # Segment's receipt time, kept
    }


def test_metrics_and_health_on_the_edge_port(edge: Edge) -> None:
    text = requests.get(edge.url + "/metrics", timeout=10).text
    for name in (
        "segflow_ingest_requests_total",
        "segflow_ingest_events_total",
        "segflow_ingest_request_duration_seconds_bucket",
        "segflow_ingest_delivery_duration_seconds_bucket",
        "segflow_ingest_producer_queue_messages",
    ):
        assert name in text
    assert requests.get(edge.url + "/healthz", timeout=10).status_code == 200
    assert requests.get(edge.url + "/readyz", timeout=10).status_code == 200


# ------------------------------------------------------------------ hostile input (issue #13)

# One event valid as every call type (the path sets the type of single calls); a hostile case
# adds its fragment last, so its keys override these (JSON's last duplicate key wins).
_BASE = b'{"userId":"u","anonymousId":"a","event":"e","groupId":"g","previousId":"p"'
_ALL = CALL_TYPES


def _event(fragment: bytes, call_type: str | None = None) -> bytes:
    kind = b'"type":"%s",' % call_type.encode() if call_type else b""
    return _BASE[:1] + kind + _BASE[1:] + b"," + fragment + b"}"


def _deep(levels: int) -> bytes:
    return b'"properties":' + b'{"a":' * (levels - 1) + b"1" + b"}" * (levels - 1)


@dataclass(frozen=True)
class Hostile:
    id: str
    fragment: bytes  # JSON members spliced into the event
    code: str
    field: str | None  # the field the reason names (a prefix of it for long paths)
    types: tuple[str, ...] = _ALL  # the call types this event is invalid as
    single: bool = True  # also posted to the single-call endpoints (the path sets the type)

    def event(self, call_type: str | None = None) -> bytes:
        return _event(self.fragment, call_type)


HOSTILE = [
    Hostile("nested-40", _deep(40), "too_deep", "properties.a.a"),
    Hostile("nested-300-past-the-encoder", _deep(300), "too_deep", "properties.a.a"),
    Hostile("nested-1000-at-the-parser-limit", _deep(1000), "too_deep", "properties.a.a"),
    Hostile(
        "nested-arrays",
        b'"context":{"x":' + b"[" * 400 + b"]" * 400 + b"}",
        "too_deep",
        "context.x[0]",
    ),
    Hostile(
        "int-2^64",
        b'"properties":{"n":18446744073709551616}',
        "number_out_of_range",
        "properties.n",
    ),
    Hostile(
        "int-40-digits", b'"traits":{"n":' + b"9" * 40 + b"}", "number_out_of_range", "traits.n"
    ),
    Hostile(
        "int-below-long",
        b'"properties":{"n":-9223372036854775809}',
        "number_out_of_range",
        "properties.n",
    ),
    Hostile("int-identifier", b'"userId":18446744073709551615', "number_out_of_range", "userId"),
    Hostile("nul-in-key", b'"properties":{"a\\u0000b":1}', "invalid_key", "properties.a\\u0000b"),
    Hostile("nul-in-user-id", b'"userId":"u\\u0000"', "invalid_character", "userId"),
    Hostile(
        "1001-keys",
        b'"properties":{' + b",".join(b'"k%d":1' % i for i in range(1001)) + b"}",
        "too_many_keys",
        "properties",
    ),
    Hostile(
        "2001-keys-in-all",
        b",".join(
            b'"o%d":{' % j + b",".join(b'"k%d":1' % i for i in range(500)) + b"}" for j in range(5)
        ),
        "too_many_keys",
        "o",
    ),
    Hostile("long-key", b'"context":{"' + b"k" * 513 + b'":1}', "key_too_long", "context.kkk"),
    Hostile("long-user-id", b'"userId":"' + b"u" * 513 + b'"', "identifier_too_long", "userId"),
    Hostile(
        "long-anonymous-id",
        b'"anonymousId":"' + b"a" * 513 + b'"',
        "identifier_too_long",
        "anonymousId",
    ),
    Hostile(
        "long-group-id",
        b'"groupId":"' + b"g" * 513 + b'"',
        "identifier_too_long",
        "groupId",
        ("group",),
    ),
    Hostile(
        "long-previous-id",
        b'"previousId":"' + b"p" * 513 + b'"',
        "identifier_too_long",
        "previousId",
        ("alias",),
    ),
    Hostile(
        "long-event-name", b'"event":"' + b"e" * 1025 + b'"', "name_too_long", "event", ("track",)
    ),
    Hostile(
        "long-page-name",
        b'"name":"' + b"n" * 1025 + b'"',
        "name_too_long",
        "name",
        ("page", "screen"),
    ),
    Hostile(
        "long-message-id", b'"messageId":"' + b"m" * 100 + b'"', "message_id_too_long", "messageId"
    ),
    Hostile("bool-user-id", b'"userId":true', "invalid_field", "userId"),
    Hostile("float-user-id", b'"userId":1.5', "invalid_field", "userId"),
    Hostile("context-array", b'"context":[]', "invalid_field", "context"),
    Hostile(
        "context-library-number", b'"context":{"library":1}', "invalid_field", "context.library"
    ),
    Hostile("integrations-array", b'"integrations":[1]', "invalid_field", "integrations"),
    Hostile(
        "properties-string",
        b'"properties":"x"',
        "invalid_field",
        "properties",
        ("track", "page", "screen"),
    ),
    Hostile("traits-array", b'"traits":[]', "invalid_field", "traits", ("identify", "group")),
    Hostile("event-number", b'"event":5', "invalid_field", "event", ("track",)),
    Hostile("channel-number", b'"channel":1', "invalid_field", "channel"),
    Hostile("timestamp-1e300", b'"timestamp":1e300', "invalid_field", "timestamp"),
    Hostile("timestamp-year-99999", b'"timestamp":"99999-01-01"', "invalid_field", "timestamp"),
    Hostile(
        "timestamp-past-utc",
        b'"timestamp":"0001-01-01T00:00:00+23:00"',
        "invalid_timestamp",
        "timestamp",
    ),
    Hostile("sent-at-junk", b'"sentAt":"junk"', "invalid_field", "sentAt"),
    Hostile("sent-at-object", b'"sentAt":{}', "invalid_field", "sentAt"),
    Hostile("unknown-type", b'"type":"purchase"', "unknown_type", "type", ("track",), single=False),
    Hostile("type-array", b'"type":["track"]', "unknown_type", "type", ("track",), single=False),
]


@pytest.fixture(scope="module")
def hostile_readers(edge: Edge) -> Iterator[dict[str, TopicReader]]:
    by_type = {ct: TopicReader(edge, ct) for ct in CALL_TYPES}
    yield by_type
    for reader in by_type.values():
        reader.close()


def _refused(resp: Any, index: int, case: Hostile) -> None:
    assert resp.status_code == 400, (case.id, resp.status_code, resp.text[:300])
    body = resp.json()
    assert (body["success"], body["code"]) == (False, "invalid_events"), body
    (problem,) = body["errors"]
    assert (problem["index"], problem["code"]) == (index, case.code), problem
    if case.field is not None:
        assert problem.get("field", "").startswith(case.field), problem
    assert problem["message"]


def _nothing_written_and_still_serving(edge: Edge, readers: dict[str, TopicReader]) -> None:
    """A valid event of each call type is answered 200 and is the next record of its topic."""
    markers = {ct: uuid.uuid4().hex for ct in CALL_TYPES}
    batch = [
        orjson.loads(_event(b'"messageId":"%s"' % markers[ct].encode(), ct)) for ct in CALL_TYPES
    ]
    resp = edge.post("/v1/batch", {"batch": batch})
    assert resp.status_code == 200, resp.text
    for ct, reader in readers.items():
        (record,) = reader.read(1)
        assert record["messageId"] == markers[ct], f"{ct}: a refused event was written"


@pytest.mark.parametrize("case", HOSTILE, ids=[c.id for c in HOSTILE])
def test_hostile_events_get_400_naming_index_and_field_on_every_endpoint(
    edge: Edge, hostile_readers: dict[str, TopicReader], case: Hostile
) -> None:
    valid = _event(b'"messageId":"%s"' % uuid.uuid4().hex.encode(), "identify")
    batch = b'{"batch":[' + valid + b"," + case.event(case.types[0]) + b"]}"
    _refused(edge.post("/v1/batch", batch), 1, case)
    if case.single:
        for call_type in case.types:
            _refused(edge.post(f"/v1/{call_type}", case.event()), 0, case)
        if "track" in case.types:
            hook = case.event("track")
            sig = signature(WEBHOOK_SECRET.encode(), hook)
            _refused(
                edge.post("/v1/webhook", hook, key=None, headers={"X-Signature": sig}), 0, case
            )
    _nothing_written_and_still_serving(edge, hostile_readers)


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        (b'{"batch":"x"}', "invalid_batch", "batch"),
        (b'{"batch":[],"sentAt":"junk"}', "invalid_batch", "sentAt"),
        (b'{"batch":[],"sentAt":"9999-12-31T23:59:59-23:00"}', "invalid_batch", "sentAt"),
        (b'{"batch":[],"context":[]}', "invalid_batch", "context"),
        (
            b'{"batch":[{"type":"track"}],"context":{' + _deep(300) + b"}}",
            "invalid_batch",
            "context.properties.a",
        ),
        (
            b'{"batch":['
            + b",".join([b'{"type":"track","userId":"u","event":"e"}'] * 300)
            + b'],"context":{"x":"'
            + b"x" * 4000
            + b'"}}',
            "context_copy_too_large",
            "the batch's context",
        ),
        (
            b'{"batch":[{"type":"track","userId":"u","event":"e","properties":{"n":NaN}}]}',
            "invalid_json",
            "body",
        ),
        (b'{"batch":[{"type":"track","userId":"u","event":"\\ud800"}]}', "invalid_json", "body"),
        (b'{"batch":[{"type":"track","userId":"u","event":"\xff"}]}', "invalid_json", "body"),
        (b'{"batch":[' + b"[" * 1100 + b"]" * 1100 + b"]}", "invalid_json", "body"),
        (b'{"batch":[{1:2}]}', "invalid_json", "body"),
        (b'{"batch":[1,"x",null,[]]}', "invalid_events", "4 of 4 events invalid"),
    ],
    ids=[
        "batch-not-a-list",
        "sent-at-junk",
        "sent-at-past-utc",
        "context-array",
        "context-nested-300",
        "context-copied-300-times",
        "nan",
        "lone-surrogate",
        "invalid-utf8",
        "nested-past-the-parser",
        "non-string-key",
        "items-not-objects",
    ],
)
def test_hostile_batches_get_400_with_a_reason(
    edge: Edge, hostile_readers: dict[str, TopicReader], body: bytes, code: str, reason: str
) -> None:
    resp = edge.post("/v1/batch", body)
    assert resp.status_code == 400, resp.text[:300]
    assert (resp.json()["success"], resp.json()["code"]) == (False, code)
    assert resp.json()["message"].startswith(reason), resp.json()
    _nothing_written_and_still_serving(edge, hostile_readers)
