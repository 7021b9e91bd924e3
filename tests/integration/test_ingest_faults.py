"""The 503 path: a PRIVATE broker is stopped under load; no 200 is given for an event it lost.

The shared broker is never touched: this test starts its own broker (other ports, a temporary
data directory) through runtime.services, points an edge at it, stops it while a client keeps
sending, checks that every answer after that is 503 with Retry-After, starts it again, checks
the edge recovers, and finally reads the topic: every event of every 200 is there.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import requests
import uvicorn
from confluent_kafka import Consumer, TopicPartition

from ingest.server import build_app, uvicorn_config
from ingest.settings import IngestSettings
from runtime.rules import parse_rules
from runtime.services import kafka as kafka_service
from runtime.settings import KafkaSettings
from runtime.topic_admin import create_topics, expected_topics
from schemas.codec import RAW_EVENT, AvroCodec
from tests.integration.conftest import free_port, unique_name

pytestmark = pytest.mark.integration

RULES = parse_rules("sources:\n  - {name: web, write_keys: [wk]}\n")
AUTH = {"Authorization": "Basic d2s6"}  # base64("wk:")


@dataclass
class Load:
    """A client sending 10-event batches back to back, remembering every answer."""

    url: str
    answers: list[tuple[int, list[str], str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            ids = [uuid.uuid4().hex for _ in range(10)]
            batch = [{"type": "track", "userId": "u", "event": "Load", "messageId": i} for i in ids]
            try:
                resp = session.post(
                    self.url, data=orjson.dumps({"batch": batch}), headers=AUTH, timeout=30
                )
            except requests.RequestException:
                continue
            self.answers.append((resp.status_code, ids, resp.headers.get("Retry-After")))
            if resp.status_code != 200:
                time.sleep(0.05)  # back off a little (the machine is shared), not Retry-After

    def count(self, status: int, since: int = 0) -> int:
        return sum(1 for s, _, _ in self.answers[since:] if s == status)


def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, object]]]:
    ports = {"port": free_port(), "controller_port": free_port()}
    var_dir = tmp_path / "kafka"
    kafka_service.start(var_dir=var_dir, num_partitions=1, **ports)  # type: ignore[arg-type]
    try:
        yield f"127.0.0.1:{ports['port']}", {"var_dir": var_dir, **ports}
    finally:
        kafka_service.stop(var_dir=var_dir)


def read_ids(bootstrap: str, topic: str) -> set[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("faults"),
            "enable.auto.commit": False,
        }
    )
    tp = TopicPartition(topic, 0, 0)
    _, high = consumer.get_watermark_offsets(tp, timeout=30)
    consumer.assign([tp])
    codec = AvroCodec()
    ids: set[str] = set()
    seen = 0
    deadline = time.monotonic() + 60
    while seen < high and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        seen += 1
        ids.add(codec.decode(RAW_EVENT, msg.value())["messageId"])
    consumer.close()
    return ids


def test_broker_stopped_no_200_for_an_event_kafka_did_not_take(
    private_broker: tuple[str, dict[str, object]],
) -> None:
    bootstrap, broker = private_broker
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix="faults.")
    create_topics(kafka, expected_topics(kafka.topics, partitions=1))
    port = free_port()
    settings = IngestSettings(
        host="127.0.0.1", port=port, kafka=kafka, produce_timeout_s=3, retry_after_s=2
    )
    app, _ = build_app(settings, RULES, use_suppression_list=False)
    server = uvicorn.Server(uvicorn_config(app, settings))
    server_thread = threading.Thread(target=server.run, daemon=True)
    server_thread.start()
    wait_for(lambda: server.started, 60, "the edge to start")
    url = f"http://127.0.0.1:{port}"
    load = Load(url + "/v1/batch")
    load_thread = threading.Thread(target=load.run, daemon=True)
    load_thread.start()
    try:
        wait_for(lambda: load.count(200) >= 20, 30, "accepted batches")
        stopped_at = len(load.answers)
        kafka_service.stop(var_dir=broker["var_dir"])  # type: ignore[arg-type]
        wait_for(lambda: load.count(503, stopped_at) >= 5, 60, "503 answers")
        assert requests.get(url + "/readyz", timeout=10).status_code == 503
        down_since = len(load.answers)
        wait_for(lambda: len(load.answers) >= down_since + 5, 30, "answers while down")
        while_down = load.answers[down_since:]
        assert {s for s, _, _ in while_down} == {503}
        kafka_service.start(**broker)  # type: ignore[arg-type]
        back = len(load.answers)
        wait_for(lambda: load.count(200, back) >= 5, 90, "the edge to recover")
    finally:
        load.stop.set()
        load_thread.join(timeout=60)
        server.should_exit = True
        server_thread.join(timeout=30)
    statuses = {s for s, _, _ in load.answers}
    assert statuses <= {200, 503}, statuses
    assert all(ra is not None and int(ra) >= 1 for s, _, ra in load.answers if s == 503)
    acknowledged = {i for s, ids, _ in load.answers if s == 200 for i in ids}
    written = read_ids(bootstrap, kafka.topics.raw("track"))
    missing = acknowledged - written
    assert not missing, f"{len(missing)} events answered 200 are not in Kafka"
