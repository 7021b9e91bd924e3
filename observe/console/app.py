"""The console's ASGI app (Starlette): one static page, a JSON API per view, and server-sent
events for the live view. Read-only: the only POST is the login form.

Everything a view shows is read in the background (the feed thread, the metrics scraper, the
status and schema readers) and kept in memory, so a request only reads memory and many open
browsers cost the pipeline nothing more than one. The live stream sends at most one update per
`update_interval_s` per browser, with every new event of the interval in it (coalesced).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from observe.console.auth import TokenCheck, TokenMiddleware
from observe.console.dlq import replay_ranges
from observe.console.settings import ConsoleSettings
from observe.feed import DlqRing, EventRing, FeedFilter

logger = logging.getLogger(__name__)

STATIC = resources.files("observe.console").joinpath("static")
# At most this many browsers stream at once; more get 503 (the console stays light).
MAX_STREAMS = 16
# Summaries sent in one update (and on connect); the browser keeps the newest few hundred.
UPDATE_LIMIT = 300
KEEPALIVE_S = 15.0
DLQ_SHOWN = 200


class Feed(Protocol):
    """What the console reads of `observe.feed.LiveFeed`."""

    events: EventRing
    dlq: DlqRing

    def record(self, seq: int) -> dict[str, Any] | None: ...
    def run(self) -> None: ...
    def stop(self) -> None: ...


class PipelineSource(Protocol):
    """What the console reads of `observe.console.pipeline.Scraper`."""

    def scrape(self) -> None: ...
    def view(self) -> list[dict[str, Any]]: ...


@dataclass
class Snapshot:
    """A background reader's latest answer (or error) and when it was read."""

    value: Any = None
    error: str | None = None
    at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "error": self.error, "age_s": self.age_s()}

    def age_s(self) -> float | None:
        return None if self.at is None else round(time.time() - self.at, 1)


@dataclass
class ConsoleState:
    settings: ConsoleSettings
    feed: Feed
    scraper: PipelineSource
    sources: Mapping[str, Any]
    status_reader: Callable[[], Any] | None = None
    schema_reader: Callable[[], Any] | None = None
    status: Snapshot = field(default_factory=Snapshot)
    schema: Snapshot = field(default_factory=Snapshot)
    streams: int = 0
    # set when the server is asked to stop: open streams end, so shutdown needs no timeout
    closing: threading.Event = field(default_factory=threading.Event)


def _filter(request: Request) -> FeedFilter:
    q = request.query_params
    return FeedFilter(
        source=q.get("source", "")[:200],
        call_type=q.get("type", "")[:20],
        event=q.get("event", "")[:200],
    )


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


async def index(request: Request) -> Response:
    return FileResponse(str(STATIC.joinpath("index.html")), media_type="text/html")


def _login_page(message: str = "") -> str:
    page = STATIC.joinpath("login.html").read_text(encoding="utf-8")
    return page.replace("<!--message-->", message)


async def login(request: Request) -> Response:
    if request.method == "GET":
        return HTMLResponse(_login_page())
    check: TokenCheck = request.app.state.token_check
    body = (await request.body())[:4096].decode("utf-8", "replace")
    given = parse_qs(body).get("token", [""])[-1]
    if not check.required:
        return Response(status_code=303, headers={"location": "/"})
    if not check.token_ok(given):
        return HTMLResponse(_login_page("<p class='error'>Wrong token.</p>"), status_code=401)
    secure = request.url.scheme == "https"
    return Response(
        status_code=303,
        headers={"location": "/", "set-cookie": check.set_cookie_header(secure).decode()},
    )


async def events(request: Request) -> Response:
    state = _state(request)
    after = _int(request.query_params.get("after"), 0)
    limit = max(1, min(UPDATE_LIMIT, _int(request.query_params.get("limit"), UPDATE_LIMIT)))
    found = state.feed.events.since(after, _filter(request), limit)
    return JSONResponse(
        {"events": [s.to_json() for s in found], "last_seq": state.feed.events.last_seq}
    )


async def event_record(request: Request) -> Response:
    seq = _int(request.path_params.get("seq"), -1)
    record = _state(request).feed.record(seq)
    if record is None:
        return JSONResponse({"error": "no longer in the console's buffer"}, status_code=404)
    return JSONResponse({"seq": seq, "record": record})


async def _stream(state: ConsoleState, flt: FeedFilter) -> AsyncGenerator[str, None]:
    interval = state.settings.update_interval_s
    ring = state.feed.events
    last = 0
    quiet_since = time.monotonic()
    try:
        yield "retry: 2000\n\n"
        while not state.closing.is_set():
            found = ring.since(last, flt, UPDATE_LIMIT)
            newest = ring.last_seq
            if found:
                payload = json.dumps({"events": [s.to_json() for s in found], "last_seq": newest})
                yield f"event: events\ndata: {payload}\n\n"
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_S:
                yield ": keepalive\n\n"
                quiet_since = time.monotonic()
            last = max(last, newest)
            await asyncio.sleep(interval)
    finally:
        state.streams -= 1


async def event_stream(request: Request) -> Response:
    state = _state(request)
    if state.streams >= MAX_STREAMS:
        return JSONResponse(
            {"error": f"at most {MAX_STREAMS} live streams at once"},
            status_code=503,
            headers={"retry-after": "10"},
        )
    state.streams += 1
    return StreamingResponse(
        _stream(state, _filter(request)),
        media_type="text/event-stream",
        headers={"x-accel-buffering": "no"},
    )


async def pipeline(request: Request) -> Response:
    state = _state(request)
    return JSONResponse({"stages": state.scraper.view(), "status": state.status.to_json()})


async def dlq(request: Request) -> Response:
    state = _state(request)
    entries = state.feed.dlq.entries()
    shown = [e.to_json() for e in reversed(entries[-DLQ_SHOWN:])]
    ranges = replay_ranges(entries, state.settings.replay_margin_s)
    return JSONResponse(
        {"entries": shown, "kept": len(entries), "replay": [r.to_json() for r in ranges]}
    )


async def schema(request: Request) -> Response:
    return JSONResponse(_state(request).schema.to_json())


async def sources(request: Request) -> Response:
    return JSONResponse(dict(_state(request).sources))


async def healthz(request: Request) -> Response:
    return Response("ok\n", media_type="text/plain")


async def _every(seconds: float, work: Callable[[], Any], into: Snapshot | None) -> None:
    """Run `work` in a thread every `seconds`; keep its answer (or error) in `into`."""
    while True:
        try:
            value = await asyncio.to_thread(work)
            if into is not None:
                into.value, into.error, into.at = value, None, time.time()
        except Exception as exc:  # a reader failing must not end the console: shown instead
            logger.warning("console: background read failed: %s", type(exc).__name__)
            if into is not None:
                into.error, into.at = f"{type(exc).__name__}: {exc}"[:300], time.time()
        await asyncio.sleep(seconds)


def create_app(state: ConsoleState, *, background: bool = True) -> Starlette:
    """The console app. With `background` it starts the feed thread and the periodic readers
    (tests that feed the rings themselves pass False)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        feed_thread: asyncio.Future[None] | None = None
        if background:
            loop = asyncio.get_running_loop()
            feed_thread = loop.run_in_executor(None, state.feed.run)
            s = state.settings
            tasks.append(
                asyncio.create_task(_every(s.scrape_interval_s, state.scraper.scrape, None))
            )
            if state.status_reader is not None:
                tasks.append(
                    asyncio.create_task(
                        _every(s.status_interval_s, state.status_reader, state.status)
                    )
                )
            if state.schema_reader is not None:
                tasks.append(
                    asyncio.create_task(
                        _every(s.schema_interval_s, state.schema_reader, state.schema)
                    )
                )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            state.feed.stop()
            if feed_thread is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(feed_thread, timeout=5)

    token = state.settings.token
    check = TokenCheck(token.get_secret_value() if token is not None else None)
    app = Starlette(
        routes=[
            Route("/", index),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/api/events", events),
            Route("/api/events/stream", event_stream),
            Route("/api/events/{seq:int}", event_record),
            Route("/api/pipeline", pipeline),
            Route("/api/dlq", dlq),
            Route("/api/schema", schema),
            Route("/api/sources", sources),
            Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.console = state
    app.state.token_check = check
    app.add_middleware(TokenMiddleware, check=check)
    return app
