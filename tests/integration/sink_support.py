"""Helpers of the sink's integration tests and bench/sink.py: clean records, topics, a sink
subprocess and warehouse queries. Records are produced directly to the clean topics (the sink
does not need the edge or the processors)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
from confluent_kafka import Consumer, Message, Producer

from runtime.services import emulator
from runtime.settings import KafkaSettings
from runtime.topic_admin import create_topics, expected_topics
from schemas.codec import CLEAN_EVENT, IDENTITY_LINK, SCHEMA_CHANGE, AvroCodec
from schemas.topics import Topics

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
_codec = AvroCodec()
_BASE_TIME = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def clean_event(
    call: str,
    n: int,
    *,
    source: str = "web",
    message_id: str | None = None,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
    event: str = "Order Completed",
    group_id: str | None = None,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """A clean_event record of call type `call` (the n-th of a stream)."""
    received = received_at or _BASE_TIME + timedelta(milliseconds=n)
    anon = anonymous_id or f"anon-{n % 997}"
    record: dict[str, Any] = {
        "type": call,
        "messageId": message_id or f"m-{uuid.uuid4().hex}",
        "source": source,
        "anonymousId": anon,
        "userId": user_id,
        "previousId": anon if call == "alias" else None,
        "groupId": group_id if call == "group" else None,
        "event": event if call == "track" else None,
        "name": "Home" if call in ("page", "screen") else None,
        "category": "Docs" if call == "page" else None,
        "receivedAt": received,
        "sentAt": received - timedelta(seconds=1),
        "originalTimestamp": received - timedelta(seconds=2),
        "timestamp": received - timedelta(seconds=1),
        "properties": orjson.dumps(
            properties
            if properties is not None
            else {"order_id": f"o{n}", "revenue": 10.5 + n % 7, "currency": "EUR"}
        ).decode(),
        "traits": orjson.dumps(traits if traits is not None else {"plan": "pro"}).decode(),
        "context": orjson.dumps(
            {"library": {"name": "analytics.js", "version": "5.2.0"}, "locale": "en-GB"}
        ).decode(),
        "integrations": "{}",
        "channel": "server",
        "extra": "{}",
        "canonicalUserId": user_id,
        "maskedFields": [],
        "piiKeyVersion": None,
        "unmapped": "{}",
        "processedAt": received + timedelta(milliseconds=5),
    }
    return record


def identity_link(identifier: str, user_id: str, *, source: str = "web") -> dict[str, Any]:
    return {
        "source": source,
        "identifier": identifier,
        "identifierType": "anonymous_id",
        "canonicalUserId": user_id,
        "messageId": f"m-{uuid.uuid4().hex}",
        "linkedAt": _BASE_TIME,
    }


def encode_event(record: dict[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) as the processors write them: key = the most anonymous identifier."""
    key = record.get("previousId") or record.get("anonymousId") or record.get("userId") or ""
    return str(key).encode(), _codec.encode(CLEAN_EVENT, record)


def encode_link(link: dict[str, Any]) -> tuple[bytes, bytes]:
    return str(link["identifier"]).encode(), _codec.encode(IDENTITY_LINK, link)


def schema_change(field: str, *, event: str = "Order Completed", **over: Any) -> dict[str, Any]:
    """A schema_change record as the processors publish it (a new property of a track event)."""
    record: dict[str, Any] = {
        "source": "web",
        "callType": "track",
        "event": event,
        "field": field,
        "change": "new_property",
        "previousType": None,
        "newType": "string",
        "mode": "evolve",
        "messageId": f"m-{uuid.uuid4().hex}",
        "detectedAt": _BASE_TIME,
    }
    record.update(over)
    return record


def encode_change(change: dict[str, Any]) -> tuple[bytes, bytes]:
    key = f"{change['source']}.{change['callType']}.{change['event'] or ''}.{change['field']}"
    return key.encode(), _codec.encode(SCHEMA_CHANGE, change)


def make_topics(bootstrap: str, prefix: str, partitions: int = 3) -> Topics:
    settings = KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix)
    create_topics(settings, expected_topics(settings.topics, partitions=partitions))
    return settings.topics


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes, bytes | None]],
    partition: int | None = None,
    **conf: Any,
) -> int:
    """Produce (key, value) pairs, in order (to one `partition` if given); waits for acks."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True, **conf}
    )
    count = 0
    for key, value in messages:
        while True:
            try:
                if partition is None:
                    producer.produce(topic, value=value, key=key)
                else:
                    producer.produce(topic, value=value, key=key, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} records not acknowledged")
    return count


def sink_env(
    bootstrap: str, prefix: str, database: str, group: str, **overrides: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGFLOW_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "SEGFLOW_KAFKA_BOOTSTRAP": bootstrap,
            "SEGFLOW_KAFKA_TOPIC_PREFIX": prefix,
            "SEGFLOW_SNOWFLAKE_DATABASE": database,
            "SEGFLOW_SNOWFLAKE_NETWORK_TIMEOUT_S": "20",
            "SEGFLOW_SNOWFLAKE_LOGIN_TIMEOUT_S": "10",
            "SEGFLOW_SINK_GROUP_ID": group,
            "SEGFLOW_SINK_METRICS_PORT": "0",
            "SEGFLOW_SINK_FLUSH_AGE_S": "0.5",
            "SEGFLOW_SINK_RETRY_MAX_S": "2",
            "SEGFLOW_LOG_FORMAT": "text",
        }
    )
    env.update(overrides)
    return env


class SinkProcess:
    """`python -m cli.main sink` as a child process, its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SinkProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "sink"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_assigned(self, timeout: float = 60.0) -> SinkProcess:
        """Wait until the sink joined its group and got partitions (signals are handled)."""
        poll_until(lambda: "assigned" in self.log() or not self.alive(), timeout, "assignment")
        assert self.alive(), self.log()[-3000:]
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Warehouse:
    """Queries against one database of an emulator, through the real connector."""

    def __init__(self, database: str, host: str = "127.0.0.1", port: int = 8090) -> None:
        self.database = database
        self.host, self.port = host, port

    def query(self, sql: str, binds: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        import snowflake.connector

        params = emulator.conn_params(self.host, self.port, timeout=20)
        conn = snowflake.connector.connect(paramstyle="qmark", **params)
        try:
            cur = conn.cursor()
            cur.execute(f'CREATE DATABASE IF NOT EXISTS "{self.database}"')
            cur.execute(f'USE DATABASE "{self.database}"')
            cur.execute(sql, binds)
            return list(cur.fetchall())
        finally:
            conn.close()

    def try_query(self, sql: str, binds: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Like query, but a missing table is an empty result (the sink has not created it)."""
        try:
            return self.query(sql, binds)
        except Exception as exc:
            if getattr(exc, "errno", None) == 2003:
                return []
            raise


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Message]:
    """The first `count` records of `topic` (all partitions), read from the beginning."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def scrape_samples(port: int) -> dict[str, float]:
    """Every sample on a process's /metrics, by name with its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def scrape_metrics(port: int) -> dict[str, float]:
    """Sum of every sample of each metric family on a process's /metrics."""
    sums: dict[str, float] = {}
    for sample, value in scrape_samples(port).items():
        name = re.split(r"[{ ]", sample, maxsplit=1)[0]
        sums[name] = sums.get(name, 0.0) + value
    return sums


def poll_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.3) -> T:
    """Call `check` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
        last = check()
    return last


class TrackLoads:
    """One fresh database and loaders of one group flushing track events named `event` into
    partition 0 of `topic`, straight through the real loader (no broker): the harness of the
    tests of naming and widening, which only need what the loader does with rows."""

    def __init__(self, name: str, event: str) -> None:
        from runtime.settings import WarehouseSettings

        self.topic, self.event = f"{name}.track", event
        self.table = event.upper()
        self.database = f"SINK_{name.upper()}_{uuid.uuid4().hex[:10].upper()}"
        self.settings = WarehouseSettings(database=self.database, network_timeout_s=20)
        self.expected = -1  # the partition's stored next offset (-1: none yet)
        self.records = 0
        self.wh = Warehouse(self.database)

    def loader(self) -> tuple[Any, Any]:
        """A new loader (SnowflakeLoader) and the registry of its metrics."""
        from prometheus_client import CollectorRegistry

        from sinks.snowflake.loader import LoaderOptions, SnowflakeLoader
        from sinks.snowflake.metrics import SinkMetrics

        registry = CollectorRegistry()
        metrics = SinkMetrics(registry)
        return SnowflakeLoader(self.settings, LoaderOptions(group_id="g"), metrics), registry

    def flush(self, loader: Any, props: list[dict[str, Any]]) -> list[str]:
        """One flush of a track event per properties dict; their message ids, in order."""
        from sinks.snowflake.batcher import FlushBatch, PartitionSlice
        from sinks.snowflake.rows import Origin, event_rows

        first = self.records
        loader.ensure_offsets([(self.topic, 0)])
        rows, ids = [], []
        for i, p in enumerate(props):
            mid = f"{self.event.lower()}-{uuid.uuid4().hex}"
            ids.append(mid)
            rec = clean_event("track", first + i, message_id=mid, properties=p, event=self.event)
            rows += event_rows(rec, Origin(self.topic, 0, first + i), audit=False)
        new = first + len(props)
        moves = [PartitionSlice(self.topic, 0, self.expected, new, len(props))]
        loader.flush(FlushBatch(moves, rows, len(props), 0))
        self.expected, self.records = new, new
        return ids

    def columns(self) -> dict[str, str]:
        """The event table's columns (lower case) and their types."""
        rows = self.wh.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = 'WEB' AND table_name = '{self.table}'"
        )
        return {str(name).lower(): str(typ) for name, typ in rows}
