"""`segflow process` honours the suppression list: a forgotten user's raw events (already in the
raw topics when the worker starts) leave no clean record, identity link or schema change; other
users' events flow; the drops are counted; a list that cannot load stops the worker at start-up.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from runtime.settings import KafkaSettings
from runtime.suppressions import publish_suppressions
from runtime.topic_admin import create_topics, expected_topics
from schemas.codec import CLEAN_EVENT, IDENTITY_LINK, SCHEMA_CHANGE
from tests.integration.conftest import free_port, unique_name
from tests.integration.processors_harness import (
    CODEC,
    Env,
    Read,
    TopicReader,
    make_env,
    produce,
    raw_event,
    start_worker,
    stop_worker,
)

pytestmark = pytest.mark.integration

U = "user-forgotten"
V = "user-kept"


def _decoded(env: Env, records: list[Read]) -> dict[str, list[dict[str, Any]]]:
    t = env.topics
    out: dict[str, list[dict[str, Any]]] = {"clean": [], "links": [], "changes": [], "dlq": []}
    for r in records:
        if r.topic in t.all_clean():
            out["clean"].append(CODEC.decode(CLEAN_EVENT, r.value))
        elif r.topic == t.identity and r.value is not None:
            out["links"].append(CODEC.decode(IDENTITY_LINK, r.value))
        elif r.topic == t.schema_changes:
            out["changes"].append(CODEC.decode(SCHEMA_CHANGE, r.value))
        elif r.topic == t.dlq:
            out["dlq"].append({"offset": r.offset})
    return out


def _suppressed(metrics_port: int) -> dict[str, float]:
    """segflow_process_events_total{outcome="suppressed"} by call type, read from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    pattern = r'segflow_process_events_total\{call_type="(\w+)",outcome="suppressed"\} (\S+)'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text)}


def test_forgotten_users_events_leave_no_trace(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = make_env(kafka_bootstrap, tmp_path, partitions=2)
    t = env.topics
    reader = TopicReader(env.bootstrap, [*t.all_clean(), t.identity, t.schema_changes, t.dlq])
    log = tmp_path / "worker.log"
    worker = None
    try:
        # before U asks to be forgotten: an identify links an anonymousId to U, in the worker's
        # state (and on segment.identity, where the forget's own deletion finds it)
        before = [
            raw_event("identify", anonymous_id="u-anon-late", user_id=U),
            raw_event("identify", anonymous_id="v-anon", user_id=V),
        ]
        produce(env.bootstrap, t, before)
        worker = start_worker(env, log)
        ids = {r["messageId"] for r in before}
        reader.poll_until(
            lambda rs: ids <= {c["messageId"] for c in _decoded(env, rs)["clean"]}, 90
        )
        stop_worker(worker)
        assert worker.returncode == 0, log.read_text()[-3000:]

        # U is forgotten; its listed identifiers miss u-anon-late
        kafka = KafkaSettings(bootstrap=env.bootstrap, topic_prefix=env.prefix)
        publish_suppressions(kafka, {U: ["u-anon-listed"]}, reason="test")
        forgotten = [
            raw_event(
                "track",
                user_id=U,
                anonymous_id="u-anon-other",
                event="Order Completed",
                properties={"u_only_prop": 1},
            ),
            raw_event("page", anonymous_id="u-anon-listed", properties={"u_only_prop": 2}),
            raw_event("identify", anonymous_id="u-anon-listed", user_id="user-other"),
            raw_event("alias", previous_id=U, user_id="user-renamed"),
            # only the identity graph knows this one is U's
            raw_event("track", anonymous_id="u-anon-late", event="Order Completed"),
        ]
        kept = [
            raw_event(
                "track",
                user_id=V,
                anonymous_id="v-anon",
                event="Order Completed",
                properties={"v_only_prop": 1},
            ),
            raw_event("page", anonymous_id="v-anon"),
            raw_event("identify", anonymous_id="v-anon-2", user_id=V),
            raw_event("alias", previous_id="v-anon", user_id="user-kept-renamed"),
        ]
        # already in the raw topics when the worker starts, interleaved with V's
        pairs = zip(forgotten[: len(kept)], kept, strict=True)
        produce(env.bootstrap, t, [r for pair in pairs for r in pair] + forgotten[len(kept) :])
        metrics_port = free_port()
        worker = start_worker(env, log, SEGFLOW_PROCESS_METRICS_PORT=str(metrics_port))

        kept_ids = {r["messageId"] for r in kept}
        reader.poll_until(
            lambda rs: kept_ids <= {c["messageId"] for c in _decoded(env, rs)["clean"]}, 90
        )
        expected = {"track": 2.0, "page": 1.0, "identify": 1.0, "alias": 1.0}
        reader.poll_until(lambda rs: _suppressed(metrics_port) == expected, 20)
        reader.poll_until(lambda rs: False, 2)  # anything committed with the last batch
        suppressed = _suppressed(metrics_port)
    finally:
        reader.close()
        if worker is not None:
            stop_worker(worker)

    out = _decoded(env, reader.records)
    u_ids = {r["messageId"] for r in forgotten}
    clean_ids = {c["messageId"] for c in out["clean"]}
    assert kept_ids <= clean_ids
    assert not u_ids & clean_ids, "a forgotten user's event reached a clean topic"
    assert suppressed == expected

    u_links = [lk for lk in out["links"] if lk["messageId"] in u_ids]
    assert u_links == [], "a forgotten user's event made an identity link"
    # U's only links are the pre-suppression ones; V's alias and identify did link
    assert {lk["messageId"] for lk in out["links"] if lk["canonicalUserId"] == U} == {
        before[0]["messageId"]
    }
    assert {"u-anon-listed", "user-other", "user-renamed"}.isdisjoint(
        lk["identifier"] for lk in out["links"]
    )
    assert {("v-anon", "user-kept-renamed"), ("v-anon-2", V)} <= {
        (lk["identifier"], lk["canonicalUserId"]) for lk in out["links"]
    }

    fields = {c["field"] for c in out["changes"]}
    assert "properties.v_only_prop" in fields
    assert not any("u_only_prop" in f for f in fields), "a forgotten user's event made a change"
    assert out["dlq"] == []


def test_a_worker_without_its_suppression_list_does_not_start(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = unique_name("tsup")  # the session deletes its topics at its end
    env = Env(kafka_bootstrap, f"{name}.", name.replace("_", "-"), tmp_path / "state")
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=env.prefix)
    specs = expected_topics(env.topics, partitions=1)
    create_topics(kafka, [s for s in specs if s.name != env.topics.suppressions])
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, SEGFLOW_PROCESS_SUPPRESSIONS_WAIT_S="10")
    try:
        code = worker.wait(30)
    finally:
        stop_worker(worker)
    output = log.read_text()
    assert code == 1, output[-3000:]
    assert f"the suppression list {env.topics.suppressions} did not load" in output
