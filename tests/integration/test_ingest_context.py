"""The edge fills context.ip from the request, and the processors truncate it; the edge serves
analytics.js its settings. One edge (in this process) and one `segflow process` worker on the
shared broker serve the whole module.

The edge trusts 127.0.0.1 as a proxy here, so the test (connecting from 127.0.0.1) can play
both a proxy that forwards a browser's address and a client that connects directly.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from ingest.settings import IngestSettings
from runtime.settings import KafkaSettings
from schemas.codec import CLEAN_EVENT, RAW_EVENT
from tests.integration.conftest import free_port
from tests.integration.processors_harness import (
    CODEC,
    TopicReader,
    make_env,
    start_worker,
    stop_worker,
)
from tests.integration.test_ingest_api import run_edge

pytestmark = pytest.mark.integration

RULES_YAML = "sources:\n  - {name: web, write_keys: [web-key]}\n"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"web-key:").decode()}
# what each event is sent with -> (context.ip the edge writes, context.ip after masking)
CASES: dict[str, tuple[dict[str, str], dict[str, Any] | None, str, str]] = {
    "direct": ({}, None, "127.0.0.1", "127.0.0.0"),
    "forwarded": (
        {"X-Forwarded-For": "6.6.6.6, 198.51.100.77"},
        None,
        "198.51.100.77",
        "198.51.100.0",
    ),
    "forwarded-v6": (
        {"X-Forwarded-For": "2001:db8:abcd:12::5, 127.0.0.1"},
        None,
        "2001:db8:abcd:12::5",
        "2001:db8:abcd::",
    ),
    "own": ({}, {"ip": "203.0.113.200"}, "203.0.113.200", "203.0.113.0"),
    "garbage": ({"X-Forwarded-For": "not-an-address"}, None, "", ""),
}


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("context")
    env = make_env(kafka_bootstrap, tmp, partitions=1)
    rules = tmp / "rules.yaml"
    rules.write_text(RULES_YAML)
    port = free_port()
    settings = IngestSettings(
        host="127.0.0.1",
        port=port,
        kafka=KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=env.prefix),
        trusted_proxies="127.0.0.1/32",
    )
    worker = start_worker(env, tmp / "worker.log")
    reader = TopicReader(kafka_bootstrap, [env.topics.raw("track"), env.topics.clean("track")])
    try:
        for _ in run_edge(settings, rules):
            url = f"http://127.0.0.1:{port}"
            sent = {}
            for name, (headers, context, _, _) in CASES.items():
                event: dict[str, Any] = {"userId": f"u-{name}", "event": name}
                if context is not None:
                    event["context"] = context
                resp = requests.post(
                    url + "/v1/track", data=orjson.dumps(event), headers={**AUTH, **headers}
                )
                assert resp.status_code == 200, resp.text
                sent[name] = event
            records = reader.poll_until(
                lambda rs: sum(r.topic == env.topics.clean("track") for r in rs) >= len(CASES),
                timeout_s=90,
            )
            yield {"url": url, "port": port, "records": records, "env": env, "tmp": tmp}
    finally:
        reader.close()
        stop_worker(worker)


def _contexts(run: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    topic = run["env"].topics.raw("track") if kind == "raw" else run["env"].topics.clean("track")
    schema = RAW_EVENT if kind == "raw" else CLEAN_EVENT
    decoded = [CODEC.decode(schema, r.value) for r in run["records"] if r.topic == topic]
    return {d["event"]: orjson.loads(d["context"]) for d in decoded}


def test_context_ip_is_the_client_address_and_arrives_truncated(run: dict[str, Any]) -> None:
    raw, clean = _contexts(run, "raw"), _contexts(run, "clean")
    assert set(raw) == set(clean) == set(CASES)
    for name, (_, _, written, masked) in CASES.items():
        assert raw[name].get("ip", "") == written, name
        assert clean[name].get("ip", "") == masked, name


def test_analytics_js_settings_for_a_known_key_and_404_for_another(run: dict[str, Any]) -> None:
    started = time.monotonic()
    origin = {"Origin": "https://shop.example"}
    resp = requests.get(run["url"] + "/v1/projects/web-key/settings", headers=origin, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "max-age=" in resp.headers["cache-control"]
    segment = resp.json()["integrations"]["Segment.io"]
    assert segment["apiKey"] == "web-key"
    assert segment["apiHost"] == f"127.0.0.1:{run['port']}/v1"
    assert segment["protocol"] == "http"
    unknown = f"/v1/projects/{uuid.uuid4().hex}/settings"
    missing = requests.get(run["url"] + unknown, headers=origin, timeout=10)
    assert missing.status_code == 404
    assert missing.json()["code"] == "unknown_write_key"
    assert missing.headers["access-control-allow-origin"] == "*"
    assert time.monotonic() - started < 5


def test_the_worker_log_is_free_of_addresses(run: dict[str, Any]) -> None:
    log = Path(run["tmp"] / "worker.log").read_text(errors="replace")
    assert "198.51.100.77" not in log and "2001:db8:abcd:12::5" not in log
