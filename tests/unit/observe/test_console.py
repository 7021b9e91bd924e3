"""The console app without a network: exposure rules, the token (header, cookie, ?token=, login
form), the JSON views, the live stream's coalescing, the replay command and no payload leaks."""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from cli.commands.replay import parse_when
from cli.main import build_parser, main
from observe.console.app import ConsoleState, _stream, create_app
from observe.console.auth import COOKIE, TokenCheck
from observe.console.dlq import replay_ranges
from observe.console.settings import ConsoleSettings, check_exposure, is_loopback
from observe.console.sources import KEY_PLACEHOLDER, sources_view
from observe.feed import DlqRing, DlqSummary, EventRing, FeedFilter, summarize
from runtime.rules import load_rules
from schemas.errors import ConfigError

TOKEN = "a-console-token-of-some-length"
SECRET = "jane.doe@example.com"


# -------------------------------------------------------------------- settings


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_a_loopback_console_needs_no_token(host: str) -> None:
    assert is_loopback(host)
    check_exposure(ConsoleSettings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "console.example.com"])
def test_an_exposed_console_without_a_token_refuses_to_start(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="SEGFLOW_CONSOLE_TOKEN"):
        check_exposure(ConsoleSettings(host=host))
    check_exposure(ConsoleSettings(host=host, token=SecretStr(TOKEN)))


def test_segflow_console_refuses_an_exposed_host_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEGFLOW_CONSOLE_TOKEN", raising=False)
    assert main(["console", "--console-host", "0.0.0.0"]) == 78
    assert "SEGFLOW_CONSOLE_TOKEN is required" in capsys.readouterr().err


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="shorter than 16"):
        check_exposure(ConsoleSettings(host="0.0.0.0", token=SecretStr("short")))


def test_the_default_binds_to_loopback() -> None:
    assert ConsoleSettings().host == "127.0.0.1" and ConsoleSettings().token is None


# -------------------------------------------------------------------- a tiny ASGI client


class FakeFeed:
    def __init__(self) -> None:
        self.events = EventRing(50)
        self.dlq = DlqRing(50)
        self.records: dict[int, dict[str, Any]] = {}

    def record(self, seq: int) -> dict[str, Any] | None:
        return self.records.get(seq)

    def run(self) -> None:
        pass

    def stop(self) -> None:
        pass


class FakeScraper:
    def scrape(self) -> None:
        pass

    def view(self) -> list[dict[str, Any]]:
        return [{"stage": "edge", "up": True}]


def line(seq: int, event: str = "Order Completed", call_type: str = "track") -> Any:
    fields = {"type": call_type, "messageId": f"m{seq}", "source": "web", "event": event}
    return summarize(
        fields, seq=seq, topic="segment.events.track", partition=0, offset=seq, timestamp_ms=1
    )


def dlq_entry(seq: int, ts_ms: int, offset: int, topic: str = "segment.raw.track") -> DlqSummary:
    return DlqSummary(seq, 0, seq, ts_ms, "invalid JSON", "codec", topic, 2, offset, "web")


def state(token: str | None = None) -> ConsoleState:
    feed = FakeFeed()
    feed.events.add(line(1), b"bytes of " + SECRET.encode())
    feed.records[1] = {"messageId": "m1", "properties": {"email": "hashed"}}
    feed.dlq.add(dlq_entry(1, 1_764_849_600_000, 41))
    settings = ConsoleSettings(token=SecretStr(token) if token else None)
    return ConsoleState(
        settings=settings,
        feed=feed,
        scraper=FakeScraper(),
        sources=sources_view(load_rules(None), "https://edge.example.com"),
    )


def call(
    app: Any,
    path: str,
    *,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """One request through the ASGI app: status, headers (lower-case), body."""
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8095),
        "app": app,
    }
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    hdrs = {k.decode(): v.decode() for k, v in start["headers"]}
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], hdrs, content


# -------------------------------------------------------------------- the token


def test_without_a_token_everything_is_served_with_security_headers() -> None:
    app = create_app(state(), background=False)
    status, headers, body = call(app, "/api/events")
    assert status == 200
    assert json.loads(body)["events"][0]["message_id"] == "m1"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert call(app, "/")[0] == 200


def test_with_a_token_the_api_needs_it_and_a_wrong_one_gets_401() -> None:
    app = create_app(state(TOKEN), background=False)
    status, headers, _ = call(app, "/api/events")
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    bad = [("Authorization", "Bearer " + TOKEN[:-1] + "x")]
    assert call(app, "/api/events", headers=bad)[0] == 401
    assert call(app, "/api/events", headers=[("Authorization", "Basic " + TOKEN)])[0] == 401
    assert call(app, "/api/events", headers=[("Authorization", f"Bearer {TOKEN}")])[0] == 200
    assert call(app, "/api/events?token=wrong-token-wrong")[0] == 401
    # a page without a session goes to the login form; health and static files are open
    status, headers, _ = call(app, "/")
    assert status == 303 and headers["location"] == "/login"
    assert call(app, "/healthz")[0] == 200
    assert call(app, "/static/console.js")[0] == 200


def test_the_token_in_the_url_becomes_a_session_cookie_and_leaves_the_url() -> None:
    app = create_app(state(TOKEN), background=False)
    status, headers, _ = call(app, f"/?token={TOKEN}&x=1")
    assert status == 303 and headers["location"] == "/?x=1"
    assert call(app, f"//evil.example.com?token={TOKEN}")[1]["location"] == "/evil.example.com"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    value = cookie.split(";")[0]
    assert call(app, "/api/dlq", headers=[("Cookie", value)])[0] == 200
    assert call(app, "/api/dlq", headers=[("Cookie", f"{COOKIE}=forged")])[0] == 401
    # a session of another token is no session here
    other = TokenCheck("another-token-0123456789").session_value()
    assert call(app, "/api/dlq", headers=[("Cookie", f"{COOKIE}={other}")])[0] == 401


def test_the_login_form() -> None:
    app = create_app(state(TOKEN), background=False)
    assert call(app, "/login")[0] == 200
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    status, _, body = call(app, "/login", method="POST", headers=form, body=b"token=nope")
    assert status == 401 and b"Wrong token" in body
    status, headers, _ = call(
        app, "/login", method="POST", headers=form, body=f"token={TOKEN}".encode()
    )
    assert status == 303 and headers["location"] == "/" and "HttpOnly" in headers["set-cookie"]


def test_https_sessions_get_secure_cookies() -> None:
    assert b"Secure" in TokenCheck(TOKEN).set_cookie_header(secure=True)
    assert b"Secure" not in TokenCheck(TOKEN).set_cookie_header(secure=False)


# -------------------------------------------------------------------- the views


def test_views_show_no_payload_and_no_write_key() -> None:
    app = create_app(state(), background=False)
    bodies = {path: call(app, path)[2] for path in ("/api/events", "/api/dlq", "/api/sources")}
    for body in bodies.values():
        assert SECRET.encode() not in body
    sources = json.loads(bodies["/api/sources"])
    assert [s["name"] for s in sources["sources"]] == ["web", "backend"]
    assert b"dev-write-key" not in bodies["/api/sources"]
    assert all(KEY_PLACEHOLDER in s for s in sources["snippets"].values())
    assert "cdnURL: 'https://edge.example.com'" in sources["snippets"]["analytics.js"]
    dlq = json.loads(bodies["/api/dlq"])
    assert dlq["entries"][0]["reason"] == "invalid JSON"
    assert dlq["replay"][0]["command"].startswith("segflow replay copy --from-topic")
    status, _, body = call(app, "/api/events/1")
    assert status == 200 and json.loads(body)["record"]["messageId"] == "m1"
    assert call(app, "/api/events/999")[0] == 404
    assert json.loads(call(app, "/api/pipeline")[2])["stages"][0]["stage"] == "edge"


def test_the_live_stream_coalesces_updates() -> None:
    st = state()
    st.settings = ConsoleSettings(update_interval_s=0.1)
    st.streams = 1
    ring = EventRing(500)
    ring.add(line(1), b"")
    st.feed.events = ring

    async def first_updates(n: int) -> list[str]:
        out: list[str] = []
        gen = _stream(st, FeedFilter(event="order"))
        async for chunk in gen:
            out.append(chunk)
            if chunk.startswith("event: events"):
                for seq in range(2, 102):  # 100 events within one interval
                    st.feed.events.add(line(seq, "Order Placed" if seq % 2 else "Other"), b"")
            if len(out) >= n:
                break
        await gen.aclose()
        return out

    chunks = asyncio.run(first_updates(3))
    updates = [json.loads(c.split("data: ", 1)[1]) for c in chunks if c.startswith("event:")]
    assert len(updates) == 2  # the first one, then the whole burst in one update
    assert [e["seq"] for e in updates[0]["events"]] == [1]
    burst = updates[1]["events"]
    assert len(burst) == 50 and all("Order" in e["event"] for e in burst)
    assert st.streams == 0  # the stream's slot is given back when the browser goes


def test_a_burst_of_streams_is_capped() -> None:
    st = state()
    st.streams = 16
    app = create_app(st, background=False)
    assert call(app, "/api/events/stream")[0] == 503


# -------------------------------------------------------------------- the replay command


def test_the_replay_command_covers_the_entries_and_parses() -> None:
    t0 = int(datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC).timestamp() * 1000)
    entries = [
        dlq_entry(1, t0 + 500, 41),
        dlq_entry(2, t0 + 65_250, 57),
        dlq_entry(3, t0, 7, topic="p.segment.events.page"),
        DlqSummary(4, 0, 4, t0, "(no complete DLQ headers)", "unknown", "", -1, -1, ""),
    ]
    page, track = replay_ranges(entries, margin_s=600)
    assert (track.topic, track.entries, track.first_offset, track.last_offset) == (
        "segment.raw.track",
        2,
        41,
        57,
    )
    assert track.partitions == (2,) and page.entries == 1
    args = build_parser().parse_args(shlex.split(track.command)[1:])
    assert (args.command, args.replay_action) == ("replay", "copy")
    assert args.from_topic == args.to_topic == "segment.raw.track"
    start, end = parse_when(args.start), parse_when(args.end)
    assert start == datetime(2026, 12, 4, 11, 50, 0, tzinfo=UTC)
    # --end is exclusive: after the last entry (12:01:05.250), to the second
    assert end == datetime(2026, 12, 4, 12, 1, 7, tzinfo=UTC)
    assert start.timestamp() * 1000 < t0 and end.timestamp() * 1000 > t0 + 65_250


def test_odd_topic_names_are_quoted() -> None:
    [r] = replay_ranges([dlq_entry(1, 0, 1, topic="a topic;rm -rf")], margin_s=0)
    assert shlex.split(r.command)[4] == "a topic;rm -rf"
