"""The edge's ASGI application: Segment's Tracking API, analytics.js paths, webhooks, metrics.

Routes (POST unless noted):

- ``/v1/track|identify|page|screen|group|alias``: one event; the path sets its type.
- ``/v1/batch``, ``/v1/import``: ``{"batch": [...], "context", "integrations", "sentAt"}``.
- ``/v1/t|i|p|s|g|a`` and ``/v1/b``: analytics.js (analytics-next) short paths, usually
  ``text/plain`` bodies with ``writeKey`` inside; CORS answers let a website post to the edge.
- ``/v1/webhook``: Segment's Webhooks destination (one event per POST, see ingest/webhook.py).
- GET ``/v1/projects/<writeKey>/settings``: the settings analytics.js loads from its ``cdnURL``
  (ingest/browser_settings.py), for write keys the edge accepts; 404 ``unknown_write_key``
  otherwise. Any origin may read it (``Access-Control-Allow-Origin: *``, no credentials); it
  is cacheable for ``settings_max_age_s`` and counts as one event against the source's rate.
- GET ``/healthz``, ``/readyz``, and ``/metrics`` unless ``admin_port`` serves it apart.

Events of the Tracking API without ``context.ip`` get the client's address (ingest/client_ip.py,
``fill_context_ip``, ``trusted_proxies``).

CORS: origins as configured (``cors_origins``); a preflight (OPTIONS) answers with the fixed list
of ``cors_allow_headers``, never an echo of what the browser asks for.

Answers: 200 ``{"success": true}`` once Kafka acknowledged every event of the request. Refusals
are ``{"success": false, "code": ..., "message": ..., "errors": [...]}``: 400 (``invalid_json``,
``not_an_object``, ``invalid_events`` with one entry per bad item, ``body_too_large``,
``too_many_events``, ``invalid_batch``, ``missing_batch``, ``invalid_encoding``,
``context_copy_too_large``; the per-item codes of the limits are in ingest/limits.py), 401
(``missing_write_key``, ``unknown_write_key``, ``malformed_authorization``,
``missing_signature``, ``bad_signature``), 408 ``body_timeout``, 415 ``unsupported_encoding``,
429 ``rate_limited`` and 503 (``kafka_unavailable``, ``kafka_timeout``, ``kafka_error``,
``queue_full``) with Retry-After. Nothing of a refused request is written.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from ingest.auth import WriteKeys, key_from_authorization
from ingest.browser_settings import ApiBase, base_from_request, settings_document, write_key_of
from ingest.client_ip import parse_address
from ingest.metrics import IngestMetrics
from ingest.records import OutRecord, RequestContext, SuppressionCheck, prepare_records
from ingest.rejections import Rejection, bad_request
from ingest.settings import IngestSettings
from ingest.validation import decode_body, parse_object, validate_envelope
from ingest.webhook import verify_signature
from runtime.health import HealthState, render
from runtime.rate_limit import SourceRateLimiter
from runtime.rules import Rules
from schemas.errors import ConfigError
from schemas.topics import HEADER_REQUEST_ID, HEADER_SOURCE

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_SHORT = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias"}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_OK_BODY = b'{"success":true}'
_JSON = b"application/json"


class EventSink(Protocol):
    """What the app needs of ingest.producer.EventProducer."""

    async def send(self, records: list[OutRecord], headers: list[tuple[str, Any]]) -> None: ...


@dataclass(frozen=True)
class Route:
    endpoint: str  # metrics label: a call type, "batch" or "webhook"
    kind: str  # "event", "batch" or "webhook"
    call_type: str | None = None


def build_routes() -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for short, call_type in _SHORT.items():
        routes[f"/v1/{call_type}"] = Route(call_type, "event", call_type)
        routes[f"/v1/{short}"] = Route(call_type, "event", call_type)
    for path in ("/v1/batch", "/v1/import", "/v1/b"):
        routes[path] = Route("batch", "batch")
    routes["/v1/webhook"] = Route("webhook", "webhook")
    return routes


class _Disconnected(Exception):
    """The client went away before sending its body."""


class IngestApp:
    """The ASGI callable. Collaborators are injected; `startup`/`shutdown` run on lifespan."""

    def __init__(
        self,
        settings: IngestSettings,
        rules: Rules,
        producer: EventSink,
        encode: Callable[[dict[str, Any]], bytes],
        metrics: IngestMetrics,
        health: HealthState,
        registry: Any,
        suppressions: SuppressionCheck | None = None,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.encode = encode
        self.metrics = metrics
        self.health = health
        self.registry = registry
        self.suppressions = suppressions
        self.clock = clock
        self.routes = build_routes()
        self.keys = WriteKeys(rules)
        rates = {s.name: s.rate_limit_per_s for s in rules.sources if s.rate_limit_per_s}
        self.limiter = SourceRateLimiter(
            rates, settings.default_rate_limit_per_s, settings.rate_limit_burst_s
        )
        self._origins = settings.origins()
        self._proxies = settings.proxies()
        self._public_base = settings.public_base()
        self._fill_ip = settings.fill_context_ip
        self._limits = settings.limits.event_limits()
        self._preflight_headers = _preflight_headers(settings)
        self._metrics_here = settings.admin_port is None
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        self._secret = secret.encode() if secret else None  # an empty secret is no secret
        self._webhook_source = (
            self.keys.by_name(settings.webhook_source) if settings.webhook_source else None
        )
        if settings.webhook_source and self._webhook_source is None:
            raise ConfigError(
                f"webhook_source {settings.webhook_source!r} (SEGFLOW_INGEST_WEBHOOK_SOURCE) "
                "is not a source of the rules file"
            )
        if self._webhook_source is not None and self._secret is None:
            # Webhooks without a write key would be accepted from anyone who finds the URL.
            raise ConfigError(
                f"webhook_source {settings.webhook_source!r} (SEGFLOW_INGEST_WEBHOOK_SOURCE) "
                "needs a webhook secret: set SEGFLOW_INGEST_WEBHOOK_SECRET (or "
                "SEGFLOW_INGEST_WEBHOOK_SECRET_FILE) to the shared secret of Segment's "
                "Webhooks destination"
            )
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown

    # ----------------------------------------------------------------- ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._on_startup is not None:
                        await self._on_startup()
                except Exception as exc:
                    logger.error("edge failed to start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self.health.set_ready(True, "serving")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.health.set_ready(False, "shutting down")
                if self._on_shutdown is not None:
                    await self._on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        method: str = scope["method"]
        headers = _headers(scope)
        cors = self._cors(headers.get("origin"))
        if method == "GET" and (
            path in ("/healthz", "/readyz") or (path == "/metrics" and self._metrics_here)
        ):
            status, ctype, body = render(path, self.registry, self.health)
            await _respond(send, status, body, ctype.encode(), [])
            return
        route = self.routes.get(path)
        if route is None and path.startswith("/v1/projects/"):
            await self._browser_settings(scope, path, method, headers, send)
            return
        if route is None:
            await _respond_json(
                send,
                404,
                {"success": False, "code": "not_found", "message": f"no endpoint {path}"},
                cors,
            )
            self.metrics.request("other", 404, 0.0)
            return
        if method == "OPTIONS":
            await _respond(send, 204, b"", b"text/plain", cors + self._preflight_headers)
            return
        if method != "POST":
            await _respond_json(
                send,
                405,
                {"success": False, "code": "method_not_allowed", "message": "use POST"},
                [*cors, (b"allow", b"POST, OPTIONS")],
            )
            self.metrics.request(route.endpoint, 405, 0.0)
            return
        client_ip = self._client_ip(scope) if self._fill_ip and route.kind != "webhook" else None
        await self._ingest(route, headers, receive, send, cors, client_ip)

    def _client_ip(self, scope: Scope) -> str | None:
        """The address of the client behind the request (ingest/client_ip.py)."""
        peer = scope.get("client")
        host = peer[0] if peer else None
        if not self._proxies:
            return self._proxies.client(host, [])
        forwarded = [
            v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-forwarded-for"
        ]
        return self._proxies.client(host, forwarded)

    # ----------------------------------------------------------------- analytics.js settings

    async def _browser_settings(
        self, scope: Scope, path: str, method: str, headers: dict[str, str], send: Send
    ) -> None:
        started = time.perf_counter()
        cors = [(b"access-control-allow-origin", b"*")]
        if method == "OPTIONS":
            await _respond(send, 204, b"", b"text/plain", cors + _SETTINGS_PREFLIGHT)
            return
        status, payload, extra = self._settings_answer(scope, path, method, headers)
        await _respond_json(send, status, payload, cors + extra)
        self.metrics.request("settings", status, time.perf_counter() - started)

    def _settings_answer(
        self, scope: Scope, path: str, method: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        no_store = [(b"cache-control", b"no-store")]
        key = write_key_of(path)
        source = self.keys.known(key) if key is not None else None
        if key is None or source is None:
            reason = "no such endpoint" if key is None else "the write key is not known here"
            code = "not_found" if key is None else "unknown_write_key"
            return 404, {"success": False, "code": code, "message": reason}, no_store
        if method != "GET":
            body = {"success": False, "code": "method_not_allowed", "message": "use GET"}
            return 405, body, [*no_store, (b"allow", b"GET, OPTIONS")]
        if self.limiter.enabled:
            wait = self.limiter.retry_after(source.name, 1)
            if wait is not None:
                body = Rejection(429, "rate_limited", f"retry in {wait} s").body()
                return 429, body, [*no_store, (b"retry-after", str(wait).encode())]
        base = self._public_base or self._request_base(scope, headers)
        if base is None:
            message = "the Host header is not a plain host[:port]; set SEGFLOW_INGEST_PUBLIC_URL"
            return 400, bad_request("invalid_host", message).body(), no_store
        max_age = f"public, max-age={self.settings.settings_max_age_s}".encode()
        return 200, settings_document(key, base), [(b"cache-control", max_age)]

    def _request_base(self, scope: Scope, headers: dict[str, str]) -> ApiBase | None:
        """The edge as this request reached it: Host, and the scheme (a trusted proxy's
        X-Forwarded-Proto, else the connection's)."""
        protocol = str(scope.get("scheme", "http"))
        forwarded_proto = headers.get("x-forwarded-proto")
        peer = scope.get("client")
        if forwarded_proto and peer and self._proxies:
            address = parse_address(peer[0])
            if address is not None and self._proxies.trusts(address):
                protocol = forwarded_proto.split(",")[0].strip().lower()
        return base_from_request(headers.get("host"), protocol)

    # ----------------------------------------------------------------- ingest

    async def _ingest(
        self,
        route: Route,
        headers: dict[str, str],
        receive: Receive,
        send: Send,
        cors: list[tuple[bytes, bytes]],
        client_ip: str | None = None,
    ) -> None:
        started = time.perf_counter()
        request_id = _request_id(headers.get("x-request-id"))
        out_headers = [*cors, (b"x-request-id", request_id.encode())]
        items: list[Any] | None = None
        status = 200
        try:
            try:
                await self._handle(route, headers, receive, request_id, out_headers, client_ip)
            except _ItemsRefused as refused:
                items = refused.items
                raise refused.rejection from None
        except Rejection as rejection:
            status = rejection.status
            extra = list(out_headers)
            if rejection.retry_after_s is not None:
                extra.append((b"retry-after", str(rejection.retry_after_s).encode()))
            if status in (400, 408, 415) and rejection.code in _CLOSE_AFTER:
                extra.append((b"connection", b"close"))
            if items is not None:
                outcome = _EVENT_OUTCOME.get(status, "invalid")
                self.metrics.count_items(items, outcome, route.call_type)
            await _respond_json(send, status, rejection.body(), extra)
        except _Disconnected:
            status = 499
        else:
            await _respond(send, 200, _OK_BODY, _JSON, out_headers)
        self.metrics.request(route.endpoint, status, time.perf_counter() - started)

    async def _handle(
        self,
        route: Route,
        headers: dict[str, str],
        receive: Receive,
        request_id: str,
        out_headers: list[tuple[bytes, bytes]],
        client_ip: str | None = None,
    ) -> None:
        settings = self.settings
        limit = settings.max_batch_bytes if route.kind == "batch" else settings.max_event_bytes
        raw = await self._read_body(receive, headers, limit)
        if route.kind == "webhook" and self._secret is not None:
            verify_signature(self._secret, raw, headers.get("x-signature"))
        data = decode_body(raw, headers.get("content-encoding"), limit)
        body = parse_object(data)
        received_at = self.clock()
        header_key = key_from_authorization(headers.get("authorization"))
        if route.kind == "webhook" and header_key is None and self._webhook_source is not None:
            source = self._webhook_source
        else:
            source = self.keys.source(header_key, body.get("writeKey"))
        if route.kind == "batch":
            envelope = validate_envelope(body, settings.max_batch_events)
            items = envelope.items
            ctx = RequestContext(
                source.name,
                received_at,
                _utc(envelope.sent_at),
                envelope.context,
                envelope.integrations,
                check_event_size=len(data) > settings.max_event_bytes,
                max_event_bytes=settings.max_event_bytes,
                limits=self._limits,
                client_ip=client_ip,
            )
        else:
            items = [body]
            ctx = RequestContext(
                source.name,
                received_at,
                call_type=route.call_type,
                trust_timestamp=route.kind == "webhook",
                max_event_bytes=settings.max_event_bytes,
                limits=self._limits,
                client_ip=client_ip,
            )
        try:
            if self.limiter.enabled:
                wait = self.limiter.retry_after(source.name, len(items))
                if wait is not None:
                    raise Rejection(
                        429,
                        "rate_limited",
                        f"source {source.name} is over its rate limit; retry in {wait} s",
                        retry_after_s=wait,
                    )
            prepared = prepare_records(items, ctx, self.encode, self.suppressions)
            if prepared.records:
                kafka_headers = [
                    (HEADER_SOURCE, source.name.encode()),
                    (HEADER_REQUEST_ID, request_id.encode()),
                ]
                await self.producer.send(prepared.records, kafka_headers)
        except Rejection as rejection:
            raise _ItemsRefused(items, rejection) from None
        self.metrics.count_events(prepared.accepted(), "accepted")
        if prepared.suppressed:
            self.metrics.count_events(prepared.suppressed, "suppressed")

    async def _read_body(self, receive: Receive, headers: dict[str, str], limit: int) -> bytes:
        """The whole body within the read deadline, refusing more than `limit` bytes early."""
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise bad_request("body_too_large", f"request body over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Disconnected
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise bad_request("body_too_large", f"request body over {limit} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError as exc:
            raise Rejection(
                408, "body_timeout", f"body not received within {self.settings.body_timeout_s:g} s"
            ) from exc
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # ----------------------------------------------------------------- CORS

    def _cors(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if origin is None:
            return []
        if "*" in self._origins:
            return [(b"access-control-allow-origin", b"*")]
        if origin in self._origins:
            return [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]
        return []


def _preflight_headers(settings: IngestSettings) -> list[tuple[bytes, bytes]]:
    """The CORS preflight answer: the configured header names, whatever the browser asks."""
    names = [h.strip() for h in settings.cors_allow_headers.split(",") if h.strip()]
    return [
        (b"access-control-allow-methods", b"POST, OPTIONS"),
        (b"access-control-allow-headers", ", ".join(names).encode()),
        (b"access-control-max-age", str(settings.cors_max_age_s).encode()),
    ]


_SETTINGS_PREFLIGHT = [
    (b"access-control-allow-methods", b"GET, OPTIONS"),
    (b"access-control-max-age", b"86400"),
]


class _ItemsRefused(Exception):
    """A refusal after the items were known (to count them by call type)."""

    def __init__(self, items: list[Any], rejection: Rejection) -> None:
        self.items = items
        self.rejection = rejection


_CLOSE_AFTER = frozenset({"body_too_large", "body_timeout"})
_EVENT_OUTCOME = {400: "invalid", 429: "rate_limited", 503: "unavailable", 401: "unauthorized"}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def _request_id(given: str | None) -> str:
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


async def _respond(
    send: Send, status: int, body: bytes, ctype: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _respond_json(
    send: Send, status: int, payload: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    await _respond(send, status, orjson.dumps(payload), _JSON, headers)
