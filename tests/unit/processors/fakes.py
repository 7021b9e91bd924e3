"""Shared by the processors' app tests: a processor app built offline (no broker), a fake
transactional producer standing in for aiokafka's, and raw records to feed it.

The producer fake has the calls the hand-off makes (send, create_batch, send_batch,
abort_transaction, stop); the Faust app, its producer and transaction bookkeeping are Faust's own.
The runs on the broker are tests/integration/test_processors_*.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faust.types import TP, Message
from prometheus_client import CollectorRegistry

from processors.app import ProcessorApp
from processors.app_config import TopicLayout
from processors.settings import ProcessorSettings
from runtime.rules import load_rules
from runtime.settings import KafkaSettings
from schemas.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec

CODEC = AvroCodec()
PARTITIONS = 3


class SendFailed(Exception):
    pass


Headers = list[tuple[str, bytes]]


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.headers: list[Headers] = []

    def append(self, *, key: Any, value: Any, timestamp: Any, headers: Any) -> object:
        self.records.append((key, value))
        self.headers.append(headers)
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeTransactionalProducer:
    """Records what it is handed; `gate` (when set) holds every send until it opens."""

    def __init__(self, gate: asyncio.Event | None = None, fail_at: int | None = None) -> None:
        self.gate = gate
        self.fail_at = fail_at
        self.calls = 0
        self.waiting = asyncio.Event()
        self.sent: list[tuple[str, int | None, bytes | None, bytes | None]] = []
        #: the headers of each record in `sent`, in the same order
        self.headers: list[Headers] = []
        self.aborted = False
        self.stopped = False
        #: the (topic, partition) of each batch handed over, in order
        self.batches: list[tuple[str, int]] = []

    async def _enter(self) -> None:
        self.calls += 1
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise SendFailed("broker said no")

    def _done(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send(self, topic: str, value: Any, *, key: Any, headers: Any) -> Any:
        await self._enter()
        self.sent.append((topic, None, key, value))
        self.headers.append(headers)
        return self._done()

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        await self._enter()
        self.batches.append((topic, partition))
        self.sent += [(topic, partition, k, v) for k, v in batch.records]
        self.headers += batch.headers
        return self._done()

    async def abort_transaction(self) -> None:
        self.aborted = True

    async def stop(self) -> None:
        self.stopped = True


def processor(
    tmp_path: Path,
    registry: CollectorRegistry | None = None,
    suppressions: Any = None,
    guarantee: str = "exactly_once",
) -> ProcessorApp:
    settings = ProcessorSettings(
        kafka=KafkaSettings(topic_prefix="unit."),
        app_id="unit-app",
        state_dir=tmp_path,
        pii_hmac_key="unit-test-key-0123456789abcdef01234567",
        processing_guarantee=guarantee,
    )
    topics = settings.kafka.topics
    layout = TopicLayout(PARTITIONS, {t: PARTITIONS for t in topics.all_clean()})
    proc = ProcessorApp(
        settings, load_rules(None), registry or CollectorRegistry(), layout, None, suppressions
    )
    assignor: Any = proc.app.assignor  # topic groups are set on assignment: all in group 0
    assignor._topic_groups = {t: 0 for t in topics.all_raw()}
    proc.app.flow_control.resume()  # as after a recovery: batches may go out
    return proc


def install(proc: ProcessorApp, fake: FakeTransactionalProducer) -> list[str]:
    """The fake as the transactional producer of every partition; returns the ids."""
    producer: Any = proc.app.producer
    tids = [f"unit-app-0-{p}" for p in range(PARTITIONS)]
    producer._transaction_producers = dict.fromkeys(tids, fake)
    producer._trn_locks = {tid: asyncio.Lock() for tid in tids}
    return tids


def messages(proc: ProcessorApp, n: int, call_type: str = "track") -> list[Message]:
    now = datetime.now(UTC)
    topic = proc.topics.raw(call_type)
    out = []
    for i in range(n):
        record = {
            "type": call_type,
            "messageId": f"m{i}" if call_type == "track" else f"{call_type}-m{i}",
            "source": "web",
            "anonymousId": f"a{i}",
            "userId": None if call_type == "track" else f"u{i}",
            "previousId": None,
            "groupId": None,
            "event": "Order Completed",
            "name": None,
            "category": None,
            "receivedAt": now,
            "sentAt": now,
            "originalTimestamp": now,
            "timestamp": now,
            "properties": '{"revenue": 1}',
            "traits": "{}",
            "context": "{}",
            "integrations": "{}",
            "channel": "server",
            "extra": "{}",
        }
        value = CODEC.encode(RAW_EVENT, record)
        out.append(Message(topic, i % 2, i, 0.0, 0, [], f"a{i}".encode(), value, None))
    return out


def clean_ids(fake: FakeTransactionalProducer) -> set[str]:
    return {
        CODEC.decode(CLEAN_EVENT, v)["messageId"]
        for t, _, _, v in fake.sent
        if ".events." in t and v is not None
    }


def dedupe_keys(proc: ProcessorApp, fake: FakeTransactionalProducer) -> set[bytes | None]:
    changelog = proc.changelog_topic["dedupe"]
    return {k for t, _, k, _ in fake.sent if t == changelog}


class Listed(set[str]):
    @property
    def identifiers(self) -> set[str]:
        return self


def raw_tps(proc: ProcessorApp, partitions: set[int]) -> set[TP]:
    return {TP(t, p) for t in proc.topics.all_raw() for p in partitions}


def held(proc: ProcessorApp) -> set[int]:
    return set(proc.deduper.state.partitions()) | set(proc.graph.state.partitions())


def recovered(
    proc: ProcessorApp, table: str, entries: dict[int, list[tuple[bytes, bytes]]]
) -> None:
    """Put entries in a table's memory store as Faust's recovery does."""
    store: Any = proc.tables[table].data
    for partition, items in entries.items():
        for key, value in items:
            store.data[key] = value
            store._key_partition[key] = partition
