"""The hand-off of a batch to the transactional producers: never cut short by a cancel, and a
failure aborts the partition's transaction and crashes the app.

The producer here stands in for aiokafka's (the calls the hand-off makes: send, create_batch,
send_batch, abort_transaction, stop); the Faust app, its producer and transaction bookkeeping are
Faust's own. The runs on the broker are tests/integration/test_processors_*.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP, Message
from prometheus_client import CollectorRegistry

from processors.app import ProcessorApp, TopicLayout, finish_despite_cancel
from processors.settings import ProcessorSettings
from runtime.rules import load_rules
from runtime.settings import KafkaSettings
from schemas.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec
from schemas.errors import FatalError

CODEC = AvroCodec()
PARTITIONS = 3


class SendFailed(Exception):
    pass


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, key: Any, value: Any, timestamp: Any, headers: Any) -> object:
        self.records.append((key, value))
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
        self.aborted = False
        self.stopped = False

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
        return self._done()

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        await self._enter()
        self.sent += [(topic, partition, k, v) for k, v in batch.records]
        return self._done()

    async def abort_transaction(self) -> None:
        self.aborted = True

    async def stop(self) -> None:
        self.stopped = True


def processor(
    tmp_path: Path, registry: CollectorRegistry | None = None, suppressions: Any = None
) -> ProcessorApp:
    settings = ProcessorSettings(
        kafka=KafkaSettings(topic_prefix="unit."),
        app_id="unit-app",
        state_dir=tmp_path,
        pii_hmac_key="unit-test-key-0123456789abcdef01234567",
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


def test_a_cancel_during_the_hand_off_waits_for_every_send_of_the_batch(tmp_path: Path) -> None:
    """A stop cancels the agent, then commits: the clean events must not commit without their
    dedupe entries, so the cancelled hand-off still gives every record to the producer."""

    async def run() -> None:
        proc = processor(tmp_path)
        fake = FakeTransactionalProducer(gate=asyncio.Event())
        install(proc, fake)
        batch = messages(proc, 40)
        task = asyncio.ensure_future(proc.process_batch(batch))
        await asyncio.wait_for(fake.waiting.wait(), 5)
        task.cancel()
        await asyncio.sleep(0.01)
        assert not task.done(), "the cancel cut the hand-off short"
        assert fake.gate is not None
        fake.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        ids = {f"m{i}" for i in range(40)}
        assert clean_ids(fake) == ids
        assert dedupe_keys(proc, fake) == {i.encode() for i in ids}
        assert proc.fatal is None

    asyncio.run(run())


class Listed(set[str]):
    @property
    def identifiers(self) -> set[str]:
        return self


def test_suppressed_users_events_are_counted_and_nothing_of_them_is_sent(tmp_path: Path) -> None:
    async def run() -> None:
        registry = CollectorRegistry()
        proc = processor(tmp_path, registry, Listed({"a3", "a7"}))
        fake = FakeTransactionalProducer()
        install(proc, fake)
        await proc.process_batch(messages(proc, 10))
        assert clean_ids(fake) == {f"m{i}" for i in range(10)} - {"m3", "m7"}
        assert dedupe_keys(proc, fake) == {f"m{i}".encode() for i in range(10)} - {b"m3", b"m7"}
        assert not any(k in (b"a3", b"a7") for _, _, k, _ in fake.sent)
        events = "segflow_process_events_total"
        labels = {"call_type": "track"}
        assert registry.get_sample_value(events, {**labels, "outcome": "suppressed"}) == 2
        assert registry.get_sample_value(events, {**labels, "outcome": "clean"}) == 8

    asyncio.run(run())


def test_a_failed_send_aborts_the_transaction_and_crashes_the_app(tmp_path: Path) -> None:
    async def run() -> None:
        proc = processor(tmp_path)
        fake = FakeTransactionalProducer(fail_at=2)
        tids = install(proc, fake)
        with pytest.raises(SendFailed):
            await proc.process_batch(messages(proc, 40))
        assert fake.aborted and fake.stopped
        producer: Any = proc.app.producer
        # Faust's commits skip an id without a producer: nothing of that transaction commits
        assert tids[0] not in producer._transaction_producers
        assert isinstance(proc.fatal, SendFailed)
        assert proc._crashing is not None
        await proc._crashing
        assert proc.app.crash_reason is proc.fatal

    asyncio.run(run())


def test_a_failed_delivery_crashes_the_app(tmp_path: Path) -> None:
    async def run() -> None:
        proc = processor(tmp_path)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(proc._on_delivered)
        fut.set_exception(SendFailed("delivery failed"))
        await asyncio.sleep(0)
        assert isinstance(proc.fatal, SendFailed)
        assert proc._crashing is not None
        await proc._crashing
        assert proc.app.crash_reason is proc.fatal

    asyncio.run(run())


def test_finish_despite_cancel_outlives_repeated_cancels() -> None:
    async def run() -> None:
        steps: list[int] = []

        async def work() -> None:
            for i in range(5):
                await asyncio.sleep(0.01)
                steps.append(i)

        task = asyncio.ensure_future(finish_despite_cancel(work()))
        for _ in range(3):
            await asyncio.sleep(0.005)
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert steps == [0, 1, 2, 3, 4]

    asyncio.run(run())


# -- revokes, generations and recovery ---------------------------------------------------------


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


def test_a_partition_leaving_and_coming_back_before_recovery_completes_is_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its records, processed before it left, whose transaction was then aborted, are
    processed again when it comes back: its state is what the changelog holds, not the
    memory of the aborted processing."""

    async def run() -> None:
        registry = CollectorRegistry()
        proc = processor(tmp_path, registry)
        fake = FakeTransactionalProducer()
        install(proc, fake)
        batch = messages(proc, 10)  # partitions 0 and 1
        everything = {0, 1, 2}
        assert await proc._on_rebalance(raw_tps(proc, everything), set(), 1) == set()
        await proc.process_batch(batch)
        assert held(proc) == {0, 1}
        # partition 1 leaves (its open transaction is abandoned, to be aborted) ...
        await proc._on_rebalance(raw_tps(proc, {0, 2}), raw_tps(proc, {1}), 2)
        assert held(proc) == {0}
        dropped = "segflow_process_state_partitions_dropped_total"
        assert registry.get_sample_value(dropped, {"reason": "revoked"}) == 1
        # ... and comes back before that rebalance's recovery completed
        await proc._on_rebalance(raw_tps(proc, everything), set(), 3)
        assert 1 in proc._full_reads
        monkeypatch.setattr(proc, "_active_partitions", lambda: everything)
        recovered(proc, "dedupe", {1: []})  # its changelog: nothing committed
        await proc._on_recovered()
        fake.sent.clear()
        await proc.process_batch([m for m in batch if m.partition == 1])
        assert clean_ids(fake) == {f"m{i}" for i in range(1, 10, 2)}, "taken for duplicates"

    asyncio.run(run())


def test_a_batch_read_before_a_rebalance_sends_nothing_more_and_is_read_again_anew(
    tmp_path: Path,
) -> None:
    """The generation changes while the batch is handed over (its partitions stay): the
    partition whose output had started is finished, the other's output is discarded, not
    acked, and its dedupe and identity changes undone, so reading it again is not a copy."""

    async def run() -> None:
        proc = processor(tmp_path)
        fake = FakeTransactionalProducer(gate=asyncio.Event())
        install(proc, fake)
        batch = messages(proc, 10) + messages(proc, 10, "identify")
        task = asyncio.ensure_future(proc.process_batch(batch))
        await asyncio.wait_for(fake.waiting.wait(), 5)  # partition 0's first send
        proc.app.consumer_generation_id += 1  # a rebalance that kept both partitions
        assert fake.gate is not None
        fake.gate.set()
        discarded = await asyncio.wait_for(task, 5)
        assert discarded == {1}
        evens, odds = range(0, 10, 2), range(1, 10, 2)
        assert clean_ids(fake) == {f"m{i}" for i in evens} | {f"identify-m{i}" for i in evens}
        assert proc.deduper.state.get(0, b"m0") is not None
        assert proc.graph.state.get(0, b"a0") is not None
        assert proc.deduper.state.get(1, b"m1") is None
        assert proc.graph.state.get(1, b"a1") is None
        fake.sent.clear()
        assert await proc.process_batch([m for m in batch if m.partition == 1]) == set()
        assert clean_ids(fake) == {f"m{i}" for i in odds} | {f"identify-m{i}" for i in odds}
        links = {k for t, _, k, _ in fake.sent if t == proc.topics.identity}
        assert {f"a{i}".encode() for i in odds} <= links

    asyncio.run(run())


def test_a_generation_jump_drops_kept_partitions_aborts_their_transactions_and_rereads(
    tmp_path: Path,
) -> None:
    """A jump of more than one generation: this worker was out of the group, its partitions
    may have been processed elsewhere; they are read back in full, transactions aborted."""

    async def run() -> None:
        proc = processor(tmp_path)
        fake = FakeTransactionalProducer()
        install(proc, fake)
        await proc._on_rebalance(raw_tps(proc, {0, 1}), set(), 4)
        await proc.process_batch(messages(proc, 10))
        assert held(proc) == {0, 1}
        reread = await proc._on_rebalance(raw_tps(proc, {0, 1}), set(), 6)
        assert held(proc) == set()
        assert reread == {TP(t, p) for t in proc.changelog_topic.values() for p in (0, 1)}
        assert fake.aborted
        assert proc._full_reads == {0, 1}
        # a plain next generation keeps the state
        await proc.process_batch(messages(proc, 10))
        assert await proc._on_rebalance(raw_tps(proc, {0, 1}), set(), 7) == set()
        assert held(proc) == {0, 1}

    asyncio.run(run())


@pytest.mark.parametrize("committed", [True, False])
def test_a_recovery_that_loaded_nothing_from_a_changelog_with_committed_records_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """Records between the low watermark and the end offset, none applied: read once more; a
    committed one stops the worker, control records and aborted writes only do not."""

    async def run() -> None:
        proc = processor(tmp_path)
        await proc._on_rebalance(raw_tps(proc, {0, 1}), set(), 1)
        consumer: Any = proc.app.consumer
        dedupe_0 = TP(proc.changelog_topic["dedupe"], 0)
        identity_1 = TP(proc.changelog_topic["identity"], 1)
        for tp in (TP(t, p) for t in proc.changelog_topic.values() for p in (0, 1)):
            consumer.low_offsets[tp], consumer.end_offsets[tp] = 0, 0  # empty
        consumer.low_offsets[dedupe_0], consumer.end_offsets[dedupe_0] = 100, 250
        consumer.low_offsets[identity_1], consumer.end_offsets[identity_1] = 0, 40
        proc._applied[identity_1] = 40  # recovery applied these
        asked: list[list[tuple[TP, int, int]]] = []

        def first_committed(kafka: Any, app_id: str, suspects: Any) -> dict[TP, int]:
            asked.append(list(suspects))
            return {dedupe_0: 120} if committed else {}

        monkeypatch.setattr("processors.app.first_committed_offsets", first_committed)
        monkeypatch.setattr(proc, "_active_partitions", lambda: {0, 1})
        await proc._on_recovered()
        assert asked == [[(dedupe_0, 100, 250)]]
        if committed:
            assert isinstance(proc.fatal, FatalError)
            message = str(proc.fatal)
            assert f"changelog {dedupe_0.topic}[0]" in message and "100..250" in message
            assert not proc.health.ready
            assert proc._crashing is not None
            await proc._crashing
        else:
            assert proc.fatal is None and proc.health.ready
        await proc._on_recovered()  # the other tables' callbacks: checked once
        assert len(asked) == 1

    asyncio.run(run())
