"""The ASGI app, driven in-process: routes, auth, CORS, gzip, limits, answers and metrics.

Kafka is replaced here by an in-memory sink (this is the HTTP layer's unit test); the real
producer and broker are exercised by tests/integration/test_ingest_*.py.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from ingest import server
from ingest.app import IngestApp
from ingest.metrics import IngestMetrics
from ingest.records import OutRecord
from ingest.rejections import Rejection
from ingest.settings import IngestSettings
from ingest.webhook import signature
from runtime.health import HealthState
from runtime.rules import parse_rules
from schemas.avro_compiled import compile_writer
from schemas.codec import RAW_EVENT, AvroCodec
from schemas.errors import ConfigError
from schemas.topics import HEADER_REQUEST_ID, HEADER_SOURCE

CODEC = AvroCodec()
NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)
RULES = parse_rules(
    """
sources:
  - {name: web, write_keys: [wk]}
  - {name: slow, write_keys: [slow-key], rate_limit_per_s: 10}
  - {name: hooks, write_keys: [hook-key]}
"""
)
TRACK = {"userId": "u1", "event": "Signed Up", "properties": {"plan": "pro"}}


class MemorySink:
    def __init__(self, fail: Rejection | None = None) -> None:
        self.sent: list[tuple[list[OutRecord], list[tuple[str, Any]]]] = []
        self.fail = fail

    async def send(self, records: list[OutRecord], headers: list[tuple[str, Any]]) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((records, headers))

    @property
    def records(self) -> list[OutRecord]:
        return [r for batch, _ in self.sent for r in batch]


class Suppressed:
    def is_suppressed(self, user_id: str | None, anonymous_id: str | None) -> bool:
        return user_id == "forgotten"


def make_app(
    sink: MemorySink | None = None, suppressions: Any = None, **settings: Any
) -> tuple[IngestApp, MemorySink, CollectorRegistry]:
    sink = sink or MemorySink()
    registry = CollectorRegistry()
    app = IngestApp(
        IngestSettings(**settings),
        RULES,
        sink,
        compile_writer(CODEC.latest(RAW_EVENT)),
        IngestMetrics(registry),
        HealthState(),
        registry,
        suppressions=suppressions,
        clock=lambda: NOW,
    )
    return app, sink, registry


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return orjson.loads(self.body)


def call(
    app: IngestApp,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    key: str | None = "wk",
    chunks: list[bytes] | None = None,
    stall: bool = False,
    client: tuple[str, int] | None = None,
    header_list: list[tuple[str, str]] | None = None,
) -> Response:
    raw = orjson.dumps(body) if isinstance(body, dict) else (body or b"")
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    parts = chunks if chunks is not None else [raw]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1 or stall}
        for i, p in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # a client that stopped sending
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [
            (k.lower().encode(), v.encode()) for k, v in [*hdrs.items(), *(header_list or [])]
        ],
        "client": client,
        "scheme": "http",
    }
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return Response(
        start["status"],
        {k.decode(): v.decode() for k, v in start["headers"]},
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


def decoded(sink: MemorySink) -> list[dict[str, Any]]:
    return [CODEC.decode(RAW_EVENT, r.value) for r in sink.records]


# ------------------------------------------------------------------ the tracking API


@pytest.mark.parametrize("path", ["/v1/track", "/v1/t", "/v1/track/"])
def test_a_track_call_is_written_and_answered_200(path: str) -> None:
    app, sink, _ = make_app()
    resp = call(app, path, TRACK, headers={"x-request-id": "req-1"})
    assert (resp.status, resp.json()) == (200, {"success": True})
    assert resp.headers["x-request-id"] == "req-1"
    (record,) = decoded(sink)
    assert (record["type"], record["event"], record["source"]) == ("track", "Signed Up", "web")
    assert record["receivedAt"] == NOW
    ((_, headers),) = sink.sent
    assert dict(headers) == {HEADER_SOURCE: b"web", HEADER_REQUEST_ID: b"req-1"}


@pytest.mark.parametrize(
    ("path", "body", "call_type"),
    [
        ("/v1/identify", {"userId": "u", "traits": {"a": 1}}, "identify"),
        ("/v1/i", {"userId": "u"}, "identify"),
        ("/v1/page", {"anonymousId": "a", "name": "Home"}, "page"),
        ("/v1/p", {"anonymousId": "a"}, "page"),
        ("/v1/screen", {"userId": "u", "name": "Main"}, "screen"),
        ("/v1/s", {"userId": "u"}, "screen"),
        ("/v1/group", {"userId": "u", "groupId": "g"}, "group"),
        ("/v1/g", {"userId": "u", "groupId": "g"}, "group"),
        ("/v1/alias", {"userId": "u", "previousId": "a"}, "alias"),
        ("/v1/a", {"userId": "u", "previousId": "a"}, "alias"),
    ],
)
def test_each_call_type_path(path: str, body: dict[str, Any], call_type: str) -> None:
    app, sink, _ = make_app()
    assert call(app, path, body).status == 200
    assert sink.records[0].call_type == call_type


def test_analytics_js_text_plain_body_with_key_inside_and_cors() -> None:
    app, sink, _ = make_app()
    body = {**TRACK, "type": "track", "writeKey": "wk", "sentAt": "2024-05-01T11:59:59Z"}
    resp = call(
        app,
        "/v1/t",
        orjson.dumps(body),
        key=None,
        headers={"content-type": "text/plain", "origin": "https://shop.example.com"},
    )
    assert resp.status == 200
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "writeKey" not in decoded(sink)[0]["extra"]


def test_cors_preflight_and_restricted_origins() -> None:
    app, _, _ = make_app(cors_origins="https://a.example")
    resp = call(
        app,
        "/v1/b",
        method="OPTIONS",
        key=None,
        headers={"origin": "https://a.example", "access-control-request-headers": "content-type"},
    )
    assert resp.status == 204
    assert resp.headers["access-control-allow-origin"] == "https://a.example"
    assert resp.headers["access-control-allow-methods"] == "POST, OPTIONS"
    other = call(app, "/v1/t", TRACK, headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_preflight_lists_the_allowed_headers_and_never_echoes_the_request() -> None:
    app, _, _ = make_app()
    resp = call(
        app,
        "/v1/t",
        method="OPTIONS",
        key=None,
        headers={
            "origin": "https://shop.example.com",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-evil, cookie",
        },
    )
    assert resp.status == 204
    allowed = [h.strip() for h in resp.headers["access-control-allow-headers"].split(",")]
    assert allowed == ["Content-Type", "Authorization", "Content-Encoding", "X-Request-Id"]
    assert resp.headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert resp.headers["access-control-max-age"] == "86400"
    custom = make_app(cors_allow_headers="Content-Type, X-Api-Key", cors_max_age_s=600)[0]
    resp = call(
        custom,
        "/v1/t",
        method="OPTIONS",
        key=None,
        headers={"origin": "https://a", "access-control-request-headers": "x-other"},
    )
    assert resp.headers["access-control-allow-headers"] == "Content-Type, X-Api-Key"
    assert resp.headers["access-control-max-age"] == "600"


def test_batch_merges_context_and_applies_clock_skew() -> None:
    app, sink, _ = make_app()
    body = {
        "batch": [
            {"type": "track", "userId": "u", "event": "a", "timestamp": "2024-05-01T10:59:50Z"},
            {"type": "identify", "userId": "u", "context": {"locale": "de"}},
        ],
        "context": {"locale": "en", "library": {"name": "analytics-python"}},
        "integrations": {"All": False},
        "sentAt": "2024-05-01T11:00:00Z",
    }
    assert call(app, "/v1/batch", body).status == 200
    track, identify = decoded(sink)
    assert orjson.loads(track["context"]) == {
        "locale": "en",
        "library": {"name": "analytics-python"},
    }
    assert orjson.loads(identify["context"])["locale"] == "de"
    assert orjson.loads(track["integrations"]) == {"All": False}
    assert track["timestamp"] == datetime(2024, 5, 1, 11, 59, 50, tzinfo=UTC)
    assert track["originalTimestamp"] == datetime(2024, 5, 1, 10, 59, 50, tzinfo=UTC)


@pytest.mark.parametrize("path", ["/v1/import", "/v1/b"])
def test_import_and_short_batch_are_batches(path: str) -> None:
    app, sink, _ = make_app()
    body = {"batch": [{"type": "page", "anonymousId": "a"}], "writeKey": "wk"}
    assert call(app, path, body, key=None).status == 200
    assert len(sink.records) == 1


def test_gzip_bodies() -> None:
    app, sink, _ = make_app()
    body = gzip.compress(orjson.dumps({"batch": [{"type": "track", **TRACK}]}))
    resp = call(app, "/v1/batch", body, headers={"content-encoding": "gzip"})
    assert resp.status == 200 and len(sink.records) == 1


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("key", "code"), [(None, "missing_write_key"), ("wrong", "unknown_write_key")]
)
def test_auth_refusals_are_401(key: str | None, code: str) -> None:
    app, sink, _ = make_app()
    resp = call(app, "/v1/track", TRACK, key=key)
    assert (resp.status, resp.json()["code"]) == (401, code)
    assert sink.sent == []


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/v1/track", b"{not json", "invalid_json"),
        ("/v1/track", b"[]", "not_an_object"),
        ("/v1/track", {"event": "e"}, "invalid_events"),
        ("/v1/track", {"userId": "u"}, "invalid_events"),
        ("/v1/batch", {"batch": [{"type": "bogus", "userId": "u"}]}, "invalid_events"),
        ("/v1/batch", {"batch": [{"type": "track", **TRACK}] * 11}, "too_many_events"),
        ("/v1/track", {**TRACK, "properties": {"x": "y" * 40_000}}, "body_too_large"),
    ],
)
def test_bad_input_is_400_with_a_reason_and_nothing_written(
    path: str, body: bytes | dict[str, Any], code: str
) -> None:
    app, sink, registry = make_app(max_batch_events=10)
    resp = call(app, path, body)
    assert resp.status == 400
    assert resp.json()["code"] == code and resp.json()["message"]
    assert sink.sent == []
    assert (
        registry.get_sample_value(
            "segflow_ingest_requests_total", {"endpoint": path.split("/")[2], "outcome": "invalid"}
        )
        == 1.0
    )


def test_partial_batch_lists_each_bad_item() -> None:
    app, sink, registry = make_app()
    body = {
        "batch": [
            {"type": "track", **TRACK},
            {"type": "track", "userId": "u"},
            {"type": "identify"},
        ]
    }
    resp = call(app, "/v1/batch", body)
    assert resp.status == 400
    assert [(e["index"], e["code"]) for e in resp.json()["errors"]] == [
        (1, "missing_event"),
        (2, "missing_identity"),
    ]
    assert sink.sent == []
    assert (
        registry.get_sample_value(
            "segflow_ingest_events_total", {"call_type": "track", "outcome": "invalid"}
        )
        == 2.0
    )


def test_oversize_batch_by_content_length_closes_the_connection() -> None:
    app, _, _ = make_app(max_batch_bytes=1000)
    resp = call(app, "/v1/batch", b"{}", headers={"content-length": "5000"})
    assert (resp.status, resp.json()["code"]) == (400, "body_too_large")
    assert resp.headers["connection"] == "close"


def test_oversize_batch_while_streaming() -> None:
    app, _, _ = make_app(max_batch_bytes=1000)
    resp = call(app, "/v1/batch", chunks=[b"x" * 600, b"x" * 600])
    assert (resp.status, resp.json()["code"]) == (400, "body_too_large")


def test_slow_bodies_hit_the_read_deadline() -> None:
    app, sink, _ = make_app(body_timeout_s=0.2)
    resp = call(app, "/v1/track", chunks=[b'{"userId":'], stall=True)
    assert (resp.status, resp.json()["code"]) == (408, "body_timeout")
    assert resp.headers["connection"] == "close" and sink.sent == []


def test_rate_limited_source_gets_429_with_retry_after() -> None:
    app, sink, registry = make_app()
    body = {"batch": [{"type": "track", **TRACK}] * 10}
    assert call(app, "/v1/batch", body, key="slow-key").status == 200
    resp = call(app, "/v1/batch", body, key="slow-key")
    assert (resp.status, resp.json()["code"]) == (429, "rate_limited")
    assert int(resp.headers["retry-after"]) >= 1
    assert call(app, "/v1/batch", body, key="wk").status == 200  # other sources unaffected
    assert len(sink.records) == 20
    assert (
        registry.get_sample_value(
            "segflow_ingest_events_total", {"call_type": "track", "outcome": "rate_limited"}
        )
        == 10.0
    )


def test_kafka_unavailable_is_503_with_retry_after() -> None:
    sink = MemorySink(Rejection(503, "kafka_timeout", "late", retry_after_s=7))
    app, _, registry = make_app(sink)
    resp = call(app, "/v1/track", TRACK)
    assert (resp.status, resp.json()["code"], resp.headers["retry-after"]) == (
        503,
        "kafka_timeout",
        "7",
    )
    assert (
        registry.get_sample_value(
            "segflow_ingest_events_total", {"call_type": "track", "outcome": "unavailable"}
        )
        == 1.0
    )


def test_suppressed_users_are_dropped_counted_and_answered_200() -> None:
    app, sink, registry = make_app(suppressions=Suppressed())
    body = {
        "batch": [{"type": "track", **TRACK, "userId": "forgotten"}, {"type": "track", **TRACK}]
    }
    assert call(app, "/v1/batch", body).status == 200
    assert [r["userId"] for r in decoded(sink)] == ["u1"]
    assert (
        registry.get_sample_value(
            "segflow_ingest_events_total", {"call_type": "track", "outcome": "suppressed"}
        )
        == 1.0
    )


def test_unknown_paths_and_methods() -> None:
    app, _, _ = make_app()
    assert call(app, "/v2/track", TRACK).status == 404
    resp = call(app, "/v1/track", method="GET")
    assert resp.status == 405 and resp.headers["allow"] == "POST, OPTIONS"


# ------------------------------------------------------------------ webhooks


def test_webhook_needs_a_valid_signature_when_a_secret_is_set() -> None:
    app, sink, _ = make_app(webhook_secret=SecretStr("s3cret"), webhook_source="hooks")
    event = orjson.dumps(
        {
            "type": "track",
            **TRACK,
            "timestamp": "2024-05-01T11:00:00Z",
            "sentAt": "2024-05-01T10:00:00Z",
        }
    )
    assert call(app, "/v1/webhook", event, key=None).json()["code"] == "missing_signature"
    bad = call(app, "/v1/webhook", event, key=None, headers={"x-signature": "00" * 20})
    assert bad.status == 401 and sink.sent == []
    sig = signature(b"s3cret", event)
    ok = call(app, "/v1/webhook", event, key=None, headers={"x-signature": sig})
    assert ok.status == 200
    (record,) = decoded(sink)
    assert record["source"] == "hooks"
    assert record["timestamp"] == datetime(2024, 5, 1, 11, tzinfo=UTC)  # Segment's, kept


@pytest.mark.parametrize("secret", [None, SecretStr("")])
def test_a_webhook_source_without_a_secret_is_a_configuration_error(
    secret: SecretStr | None,
) -> None:
    with pytest.raises(ConfigError, match="SEGFLOW_INGEST_WEBHOOK_SECRET"):
        make_app(webhook_source="hooks", webhook_secret=secret)


def test_webhook_without_a_default_source_needs_a_write_key() -> None:
    app, sink, _ = make_app()
    event = {"type": "identify", "userId": "u"}
    assert call(app, "/v1/webhook", event, key=None).status == 401
    assert call(app, "/v1/webhook", event, key="hook-key").status == 200
    assert decoded(sink)[0]["source"] == "hooks"


# ------------------------------------------------------------------ metrics and health


def test_an_admin_port_takes_metrics_off_the_api_port() -> None:
    app, _, _ = make_app(admin_port=9101)
    call(app, "/v1/track", TRACK)
    assert call(app, "/metrics", method="GET", key=None).status == 404
    assert call(app, "/healthz", method="GET", key=None).status == 200  # load balancers probe it


def test_the_edge_serves_metrics_and_health_on_its_admin_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Producer:
        ready = True

        def __init__(self, settings: Any, metrics: Any) -> None:
            pass

        def start(self) -> None:
            pass

        def stop(self, timeout: float) -> None:
            pass

    monkeypatch.setattr(server, "EventProducer", Producer)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = IngestSettings(admin_host="127.0.0.1", admin_port=port)
    app, _ = server.build_app(settings, RULES, use_suppression_list=False)

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    async def lifespan() -> list[tuple[int, bytes]]:
        messages = [{"type": "lifespan.startup"}]
        answers: list[dict[str, Any]] = []
        stop = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await stop.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: dict[str, Any]) -> None:
            answers.append(message)

        task = asyncio.create_task(app(_LIFESPAN, receive, send))
        while not answers:
            await asyncio.sleep(0.01)
        assert answers[0]["type"] == "lifespan.startup.complete"
        got = [await asyncio.to_thread(get, p) for p in ("/metrics", "/readyz", "/v1/track")]
        stop.set()
        await task
        return got

    (metrics, ready, api) = asyncio.run(lifespan())
    assert metrics[0] == 200 and b"segflow_ingest_requests_total" in metrics[1]
    assert ready[0] == 200
    assert api[0] == 404  # the admin port serves no API
    with pytest.raises(OSError):  # stopped with the edge
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


_LIFESPAN: dict[str, Any] = {"type": "lifespan"}


def test_metrics_and_health_on_the_same_app() -> None:
    app, _, _ = make_app()
    call(app, "/v1/track", TRACK)
    metrics = call(app, "/metrics", method="GET", key=None)
    assert metrics.status == 200
    text = metrics.body.decode()
    assert 'segflow_ingest_requests_total{endpoint="track",outcome="accepted"} 1.0' in text
    assert 'segflow_ingest_events_total{call_type="track",outcome="accepted"} 1.0' in text
    assert "segflow_ingest_request_duration_seconds_bucket" in text
    assert call(app, "/healthz", method="GET", key=None).status == 200
    assert call(app, "/readyz", method="GET", key=None).status == 503  # not started yet
    app.health.set_ready(True)
    assert call(app, "/readyz", method="GET", key=None).status == 200


# ------------------------------------------------------------------ context.ip


def test_events_without_context_ip_get_the_peer_address_on_every_route() -> None:
    app, sink, _ = make_app()
    peer = ("203.0.113.9", 50123)
    spoof = [("x-forwarded-for", "198.51.100.66")]  # from an untrusted peer: ignored
    batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "a"},
            {"type": "identify", "userId": "u", "context": {"ip": "192.0.2.1"}},
            {"type": "page", "userId": "u", "context": {"locale": "de"}},
        ],
        "context": {"library": {"name": "analytics-python"}},
    }
    assert call(app, "/v1/batch", batch, client=peer, header_list=spoof).status == 200
    assert call(app, "/v1/t", TRACK, client=("::ffff:203.0.113.9", 1)).status == 200
    contexts = [orjson.loads(r["context"]) for r in decoded(sink)]
    assert contexts == [
        {"library": {"name": "analytics-python"}, "ip": "203.0.113.9"},
        {"library": {"name": "analytics-python"}, "ip": "192.0.2.1"},  # the client's own
        {"library": {"name": "analytics-python"}, "locale": "de", "ip": "203.0.113.9"},
        {"ip": "203.0.113.9"},
    ]


def test_behind_a_trusted_proxy_the_forwarded_client_is_used() -> None:
    app, sink, _ = make_app(trusted_proxies="10.0.0.0/8")
    proxy = ("10.1.2.3", 40000)
    xff = [("x-forwarded-for", "6.6.6.6, 2001:db8:1:2::5"), ("x-forwarded-for", "10.9.9.9")]
    assert call(app, "/v1/track", TRACK, client=proxy, header_list=xff).status == 200
    garbage = [("x-forwarded-for", "<script>")]  # never a 400 or a 500: the client is unknown
    assert call(app, "/v1/track", TRACK, client=proxy, header_list=garbage).status == 200
    first, second = decoded(sink)
    assert orjson.loads(first["context"]) == {"ip": "2001:db8:1:2::5"}
    assert orjson.loads(second["context"]) == {}


def test_context_ip_is_not_filled_when_turned_off_or_on_webhooks() -> None:
    app, sink, _ = make_app(fill_context_ip=False)
    assert call(app, "/v1/track", TRACK, client=("203.0.113.9", 1)).status == 200
    hooks, hook_sink, _ = make_app()
    event = {**TRACK, "type": "track", "writeKey": "hook-key"}
    assert call(hooks, "/v1/webhook", event, key=None, client=("54.1.2.3", 1)).status == 200
    assert orjson.loads(decoded(sink)[0]["context"]) == {}
    assert orjson.loads(decoded(hook_sink)[0]["context"]) == {}  # Segment's server, not a user


# ------------------------------------------------------------------ analytics.js settings


def test_the_settings_of_a_known_write_key_point_analytics_js_at_the_edge() -> None:
    app, _, registry = make_app()
    resp = call(
        app,
        "/v1/projects/wk/settings",
        method="GET",
        key=None,
        headers={"host": "Edge.Example:8088", "origin": "https://shop.example"},
    )
    assert resp.status == 200
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in resp.headers
    assert resp.headers["cache-control"] == "public, max-age=300"
    doc = resp.json()
    segment = doc["integrations"]["Segment.io"]
    assert (segment["apiKey"], segment["apiHost"], segment["protocol"]) == (
        "wk",
        "edge.example:8088/v1",
        "http",
    )
    assert list(doc["integrations"]) == ["Segment.io"]  # no device-mode destinations
    assert doc["metrics"]["sampleRate"] == 0  # no telemetry to Segment
    assert doc["remotePlugins"] == [] and doc["enabledMiddleware"] == {}
    assert doc["middlewareSettings"] == {} and doc["edgeFunction"] == {}
    assert doc["analyticsNextEnabled"] is True and "track" in doc["plan"]
    labels = {"endpoint": "settings", "outcome": "accepted"}
    assert registry.get_sample_value("segflow_ingest_requests_total", labels) == 1


def test_the_public_url_wins_over_the_host_header() -> None:
    app, _, _ = make_app(public_url="https://events.example.com/segment/")
    resp = call(app, "/v1/projects/wk/settings", method="GET", key=None, headers={"host": "evil"})
    segment = resp.json()["integrations"]["Segment.io"]
    assert (segment["apiHost"], segment["protocol"]) == ("events.example.com/segment/v1", "https")


def test_the_protocol_comes_from_a_trusted_proxy_only() -> None:
    headers = {"host": "edge.example", "x-forwarded-proto": "https"}
    trusting, _, _ = make_app(trusted_proxies="10.0.0.0/8")
    for client, protocol in ((("10.0.0.5", 1), "https"), (("203.0.113.1", 1), "http")):
        resp = call(
            trusting,
            "/v1/projects/wk/settings",
            method="GET",
            key=None,
            headers=headers,
            client=client,
        )
        assert resp.json()["integrations"]["Segment.io"]["protocol"] == protocol


@pytest.mark.parametrize("host", ["evil.example/x", "a b", "", "edge.example:80:80", "é.example"])
def test_a_host_header_that_is_not_a_plain_host_gets_400(host: str) -> None:
    app, _, _ = make_app()
    headers = {"host": host} if host else {}
    resp = call(app, "/v1/projects/wk/settings", method="GET", key=None, headers=headers)
    assert (resp.status, resp.json()["code"]) == (400, "invalid_host")


@pytest.mark.parametrize(
    "path", ["/v1/projects/nope/settings", "/v1/projects//settings", "/v1/projects/wk/other"]
)
def test_unknown_write_keys_and_paths_get_404(path: str) -> None:
    app, _, registry = make_app()
    resp = call(app, path, method="GET", key=None, headers={"host": "edge.example"})
    assert resp.status == 404 and resp.json()["success"] is False
    assert resp.headers["cache-control"] == "no-store"
    assert "wk" not in resp.body.decode()
    labels = {"endpoint": "settings", "outcome": "not_found"}
    assert registry.get_sample_value("segflow_ingest_requests_total", labels) == 1


def test_settings_preflight_method_and_rate_limit() -> None:
    app, _, _ = make_app()
    pre = call(app, "/v1/projects/wk/settings", method="OPTIONS", key=None)
    assert pre.status == 204 and pre.headers["access-control-allow-methods"] == "GET, OPTIONS"
    post = call(app, "/v1/projects/wk/settings", method="POST", key=None)
    assert (post.status, post.headers["allow"]) == (405, "GET, OPTIONS")
    slow, _, _ = make_app(rate_limit_burst_s=0.2)  # "slow": 10 events/s, a bucket of 2
    statuses = [
        call(slow, "/v1/projects/slow-key/settings", method="GET", key=None, headers={"host": "h"})
        for _ in range(3)
    ]
    assert [r.status for r in statuses] == [200, 200, 429]
    assert statuses[2].headers["retry-after"]
