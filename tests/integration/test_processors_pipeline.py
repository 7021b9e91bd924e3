"""`segflow process` on the real broker: raw records in, clean records, identity links, schema
changes, DLQ records and webhook alerts out.

One worker serves every assertion of this module (a Faust worker takes seconds to join).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from schemas.codec import CLEAN_EVENT, IDENTITY_LINK, SCHEMA_CHANGE
from schemas.topics import (
    HEADER_ERROR,
    HEADER_ERROR_CODE,
    HEADER_ORIGIN_OFFSET,
    HEADER_ORIGIN_PARTITION,
    HEADER_ORIGIN_TOPIC,
)
from tests.integration.conftest import free_port
from tests.integration.processors_harness import (
    CODEC,
    Env,
    Read,
    TopicReader,
    make_env,
    produce,
    produce_bytes,
    raw_event,
    start_worker,
    stop_worker,
)

pytestmark = pytest.mark.integration

EMAIL = "Jane.Doe@Example.com"
PHONE = "+1 415 555 2671"
IP = "198.51.100.77"
FREE_TEXT_EMAIL = "someone.else@corp.example"


class Hook:
    """A Slack-compatible webhook receiver on a free local port."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Raw records in two phases (identity calls first) and what the test expects of them.

    Call types travel in separate topics, so an identify is not ordered before a track of the
    same user unless it was processed first; the second phase is sent once its link is out.
    """
    recs: list[dict[str, Any]] = []
    # identify links anon-1 -> user-1; later events of anon-1 resolve to user-1
    recs.append(
        raw_event(
            "identify",
            anonymous_id="anon-1",
            user_id="user-1",
            traits={"email": EMAIL, "phone": PHONE, "password": "hunter2"},
            context={"ip": IP},
        )
    )
    # alias: old id -> user-9
    recs.append(raw_event("alias", previous_id="old-id", user_id="user-9"))
    # a shared device: six users identify on one anonymousId (the default limit is 5)
    recs += [
        raw_event("identify", anonymous_id="kiosk", user_id=f"kiosk-user-{i}") for i in range(6)
    ]
    # blocked identifiers never link
    recs.append(raw_event("identify", anonymous_id="undefined", user_id="user-7"))
    # segflow's own reverse ETL coming back: dropped, no clean record, no identity link
    echo = raw_event(
        "identify",
        anonymous_id="echo-anon",
        user_id="echo-user",
        traits={"plan": "pro"},
        context={"segflow": {"reverse_etl": "users-to-segment"}},
    )
    later: list[dict[str, Any]] = []
    tracks = [
        raw_event(
            "track",
            anonymous_id="anon-1",
            event="Order Completed",
            properties={"revenue": 10, "order_id": f"o-{i}", "coupon_code": "X1"},
            context={"ip": IP, "note": f"mail {FREE_TEXT_EMAIL}"},
            late_s=3600 if i == 0 else 0,
        )
        for i in range(5)
    ]
    later += tracks
    later.append(dict(tracks[1]))  # a duplicate (same messageId)
    later.append(dict(tracks[2]))  # another
    later.append(dict(recs[0]))  # a late copy of the identify
    # a type change against the plan: revenue is a number in the plan
    later.append(
        raw_event(
            "track",
            anonymous_id="anon-2",
            event="Order Completed",
            properties={"revenue": "ten"},
        )
    )
    unique = len(recs) + len(later) - 3
    recs.append(echo)
    return recs, later, {"unique": unique, "tracks": tracks, "echo": echo["messageId"]}


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("processors")
    env = make_env(kafka_bootstrap, tmp)
    hook = Hook()
    first, later, expect = scenario()
    produce(env.bootstrap, env.topics, first)
    produce_bytes(env.bootstrap, env.topics.raw("track"), b"anon-x", b"not avro at all")
    bad_json = raw_event("track", anonymous_id="anon-y", event="Bad")
    bad_json["properties"] = "{not json"
    produce(env.bootstrap, env.topics, [bad_json])
    metrics_port = free_port()
    log = tmp / "worker.log"
    worker = start_worker(
        env,
        log,
        SEGFLOW_PROCESS_METRICS_PORT=str(metrics_port),
        SEGFLOW_PROCESS_ALERT_WEBHOOK_URL=hook.url,
        SEGFLOW_PROCESS_ALERT_MIN_INTERVAL_S="300",
    )
    reader = TopicReader(
        env.bootstrap,
        [*env.topics.all_clean(), env.topics.identity, env.topics.schema_changes, env.topics.dlq],
    )
    try:
        reader.poll_until(
            lambda rs: any(r.topic == env.topics.identity and r.key == b"anon-1" for r in rs),
            timeout_s=90,
        )
        produce(env.bootstrap, env.topics, later)
        records = reader.poll_until(
            lambda rs: (
                sum(r.topic in env.topics.all_clean() for r in rs) >= expect["unique"]
                and sum(r.topic == env.topics.dlq for r in rs) >= 2
            ),
            timeout_s=90,
        )
        # what a duplicate would add arrives within the next commit; read a little longer
        reader.poll_until(lambda rs: False, timeout_s=3)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
        yield {
            "env": env,
            "records": records,
            "expect": expect,
            "hook": hook,
            "metrics": metrics.decode(),
            "log": log,
        }
    finally:
        reader.close()
        stop_worker(worker)
        hook.server.shutdown()


def _clean(run: dict[str, Any]) -> list[dict[str, Any]]:
    env: Env = run["env"]
    return [
        CODEC.decode(CLEAN_EVENT, r.value)
        for r in run["records"]
        if r.topic in env.topics.all_clean()
    ]


def test_every_event_once_duplicates_dropped(run: dict[str, Any]) -> None:
    clean = _clean(run)
    ids = [c["messageId"] for c in clean]
    assert len(ids) == run["expect"]["unique"]
    assert len(set(ids)) == len(ids)
    assert 'segflow_process_duplicates_total{call_type="track"} 2.0' in run["metrics"]
    assert 'segflow_process_duplicates_total{call_type="identify"} 1.0' in run["metrics"]


def test_reverse_etl_echoes_are_dropped_and_counted(run: dict[str, Any]) -> None:
    env: Env = run["env"]
    assert run["expect"]["echo"] not in {c["messageId"] for c in _clean(run)}
    identifiers = {
        CODEC.decode(IDENTITY_LINK, r.value)["identifier"]
        for r in run["records"]
        if r.topic == env.topics.identity
    }
    assert not identifiers & {"echo-anon", "echo-user"}
    assert (
        'segflow_process_events_total{call_type="identify",outcome="reverse_etl_echo"} 1.0'
        in run["metrics"]
    )


def test_no_masked_value_reaches_a_clean_topic(run: dict[str, Any]) -> None:
    env: Env = run["env"]
    blob = b"".join(
        r.value or b""
        for r in run["records"]
        if r.topic in env.topics.all_clean() or r.topic == env.topics.identity
    )
    for secret in (EMAIL, EMAIL.lower(), PHONE, IP, "hunter2", FREE_TEXT_EMAIL):
        assert secret.encode() not in blob
    identify = next(c for c in _clean(run) if c["userId"] == "user-1")
    traits = json.loads(identify["traits"])
    assert len(traits["email"]) == 64  # HMAC-SHA256 hex
    assert traits["phone"] == "***2671"
    assert "password" not in traits
    assert json.loads(identify["context"])["ip"] == "198.51.100.0"
    assert set(identify["maskedFields"]) >= {
        "traits.email:hash",
        "traits.phone:mask",
        "traits.password:drop",
        "context.ip:truncate",
    }
    assert identify["piiKeyVersion"].startswith("v1-")  # the label and the key's fingerprint
    track = next(c for c in _clean(run) if c["event"] == "Order Completed" and c["userId"] is None)
    assert json.loads(track["context"])["note"] == "mail ***@corp.example"


def test_identity_links_canonical_ids_and_guard_rails(run: dict[str, Any]) -> None:
    env: Env = run["env"]
    links = [
        CODEC.decode(IDENTITY_LINK, r.value)
        for r in run["records"]
        if r.topic == env.topics.identity
    ]
    pairs = {(lk["identifier"], lk["canonicalUserId"]) for lk in links}
    assert ("anon-1", "user-1") in pairs
    assert ("old-id", "user-9") in pairs
    kiosk = {lk["canonicalUserId"] for lk in links if lk["identifier"] == "kiosk"}
    assert kiosk == {f"kiosk-user-{i}" for i in range(5)}  # the sixth was refused
    assert not any(lk["identifier"] == "undefined" for lk in links)
    tracked = [c for c in _clean(run) if c["anonymousId"] == "anon-1" and c["type"] == "track"]
    assert {c["canonicalUserId"] for c in tracked} == {"user-1"}
    assert (
        'segflow_process_identity_merges_refused_total{reason="shared_device"} 1.0'
        in run["metrics"]
    )


def test_schema_changes_and_rate_limited_webhook(run: dict[str, Any]) -> None:
    env: Env = run["env"]
    changes = [
        CODEC.decode(SCHEMA_CHANGE, r.value)
        for r in run["records"]
        if r.topic == env.topics.schema_changes
    ]
    kinds = {(c["field"], c["change"], c["previousType"], c["newType"]) for c in changes}
    assert ("properties.coupon_code", "new_property", None, "string") in kinds
    assert ("properties.revenue", "type_change", "number", "string") in kinds
    assert len([c for c in changes if c["field"] == "properties.coupon_code"]) == 1
    hook: Hook = run["hook"]
    # many changes, one post: the rest wait for the 300 s interval
    assert len(hook.posts) == 1
    text = hook.posts[0]["text"]
    assert "coupon_code" in text
    assert EMAIL not in text and IP not in text


def test_poison_records_go_to_the_dlq_with_their_origin(run: dict[str, Any]) -> None:
    env: Env = run["env"]
    dlq: list[Read] = [r for r in run["records"] if r.topic == env.topics.dlq]
    codes = {r.headers[HEADER_ERROR_CODE].decode() for r in dlq}
    assert codes == {"undecodable", "invalid_json"}
    garbage = next(r for r in dlq if r.value == b"not avro at all")
    assert garbage.headers[HEADER_ORIGIN_TOPIC].decode() == env.topics.raw("track")
    assert int(garbage.headers[HEADER_ORIGIN_PARTITION]) >= 0
    assert int(garbage.headers[HEADER_ORIGIN_OFFSET]) >= 0
    assert b"single-object marker" in garbage.headers[HEADER_ERROR]
    assert "segflow_process_event_lateness_seconds_bucket" in run["metrics"]
    assert Path(run["log"]).exists()
