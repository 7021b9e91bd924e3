"""What the processor integration tests share: raw records, topics, a worker subprocess, reading.

Workers run as `python -m cli.main process` subprocesses on the shared broker, each test with its
own topic prefix and Faust app id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from runtime.settings import KafkaSettings
from runtime.topic_admin import create_topics, expected_topics
from schemas.codec import RAW_EVENT, AvroCodec
from schemas.topics import HEADER_SOURCE, Topics
from tests.integration.conftest import unique_name

REPO = Path(__file__).resolve().parents[2]
CODEC = AvroCodec()
HMAC_KEY = "test-hmac-key-0123456789abcdef0123456789"


def raw_event(
    call_type: str,
    *,
    message_id: str | None = None,
    anonymous_id: str | None = None,
    user_id: str | None = None,
    previous_id: str | None = None,
    event: str | None = None,
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    late_s: float = 0.0,
    source: str = "web",
) -> dict[str, Any]:
    """A raw_event record as the edge writes it."""
    received = datetime.now(UTC)
    ts = received - timedelta(seconds=late_s)
    return {
        "type": call_type,
        "messageId": message_id or str(uuid.uuid4()),
        "source": source,
        "anonymousId": anonymous_id,
        "userId": user_id,
        "previousId": previous_id,
        "groupId": None,
        "event": event,
        "name": None,
        "category": None,
        "receivedAt": received,
        "sentAt": received,
        "originalTimestamp": ts,
        "timestamp": ts,
        "properties": orjson.dumps(properties or {}).decode(),
        "traits": orjson.dumps(traits or {}).decode(),
        "context": orjson.dumps(context or {}).decode(),
        "integrations": "{}",
        "channel": "server",
        "extra": "{}",
    }


def record_key(record: dict[str, Any]) -> bytes:
    if record["type"] == "alias" and record.get("previousId"):
        return str(record["previousId"]).encode()
    return str(record.get("anonymousId") or record.get("userId")).encode()


@dataclass
class Env:
    bootstrap: str
    prefix: str
    app_id: str
    state_dir: Path

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)


def make_env(bootstrap: str, tmp_path: Path, partitions: int = 3) -> Env:
    name = unique_name("tproc")  # the session deletes its topics at its end
    env = Env(bootstrap, f"{name}.", name.replace("_", "-"), tmp_path / "state")
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=env.prefix)
    create_topics(kafka, expected_topics(env.topics, partitions=partitions))
    return env


def produce(
    bootstrap: str, topics: Topics, records: Iterable[dict[str, Any]], raw_bytes: bool = False
) -> int:
    """Write raw records (dicts, Avro-encoded here) to their raw topics; returns the count."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    n = 0
    for rec in records:
        producer.produce(
            topics.raw(rec["type"]),
            key=record_key(rec),
            value=CODEC.encode(RAW_EVENT, rec),
            headers=[(HEADER_SOURCE, rec["source"].encode())],
        )
        n += 1
        if n % 10_000 == 0:
            producer.flush()
    producer.flush()
    return n


def produce_bytes(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=key, value=value)
    producer.flush()


def start_worker(env: Env, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """`segflow process` as a subprocess of this test."""
    child_env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SEGFLOW_KAFKA_BOOTSTRAP": env.bootstrap,
        "SEGFLOW_KAFKA_TOPIC_PREFIX": env.prefix,
        "SEGFLOW_PROCESS_APP_ID": env.app_id,
        "SEGFLOW_PROCESS_STATE_DIR": str(env.state_dir),
        "SEGFLOW_PROCESS_PII_HMAC_KEY": HMAC_KEY,
        "SEGFLOW_PROCESS_METRICS_PORT": "0",
        "SEGFLOW_LOG_FORMAT": "text",
        **extra,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "process"],
            cwd=REPO,
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Read:
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    offset: int = -1


class TopicReader:
    """Reads topics from the beginning with read_committed, accumulating what it saw."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                # a topic the worker creates after the subscription (a state changelog) is
                # seen within a second, not at the default five-minute metadata refresh
                "topic.metadata.refresh.interval.ms": 1000,
            }
        )
        self.consumer.subscribe(topics)
        self.records: list[Read] = []
        # a topic appearing later rebalances the reader's group, which commits nothing, so the
        # partitions it held are read again from the beginning: each record counts once
        self._seen: set[tuple[str, int, int]] = set()

    def poll_until(self, done: Any, timeout_s: float) -> list[Read]:
        """Poll until `done(records)` is true or the deadline passes; returns what was read."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(self.records):
            for msg in self.consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                where = (str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))
                if where in self._seen:
                    continue
                self._seen.add(where)
                headers: dict[str, bytes] = {}
                for item in msg.headers() or []:
                    name, value = item[0], item[1]
                    headers[str(name)] = value.encode() if isinstance(value, str) else value or b""
                self.records.append(
                    Read(
                        str(msg.topic()),
                        int(msg.partition() or 0),
                        msg.key(),
                        msg.value(),
                        headers,
                        int(msg.offset() or 0),
                    )
                )
        return self.records

    def close(self) -> None:
        self.consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    total = 0
    for p in range(partitions):
        total += watermark_end(consumer, TopicPartition(topic, p))
    consumer.close()
    return total


LEADER_UNKNOWN = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError._UNKNOWN_PARTITION,
}


def watermark_end(consumer: Consumer, tp: TopicPartition, tries: int = 20) -> int:
    """The end offset of `tp`; a partition of a topic just created may answer "not leader"
    for a moment (its leader not yet known to the client): asked again."""
    for attempt in range(tries):
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=10)[1])
        except KafkaException as exc:
            if exc.args[0].code() not in LEADER_UNKNOWN or attempt == tries - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")
