"""The hand-off of a batch to the transactional producers: never cut short by a cancel, a
failure aborts the partition's transaction and crashes the app, and a batch a rebalance made
stale is discarded with its state changes undone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from processors.handoff import finish_despite_cancel
from tests.unit.processors.fakes import (
    FakeTransactionalProducer,
    SendFailed,
    clean_ids,
    dedupe_keys,
    install,
    messages,
    processor,
)


def test_a_cancel_during_the_hand_off_waits_for_every_send_of_the_batch(tmp_path: Path) -> None:
    """A stop cancels the agent, then commits: the clean events must not commit without their
    dedupe entries, so the cancelled hand-off still gives every record to the producer."""

    async def run() -> None:
        proc = processor(tmp_path)
        fake = FakeTransactionalProducer(gate=asyncio.Event())
        install(proc, fake)
        batch = messages(proc, 40)
        task = asyncio.ensure_future(proc.agent.process_batch(batch))
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


def test_a_failed_send_aborts_the_transaction_and_crashes_the_app(tmp_path: Path) -> None:
    async def run() -> None:
        proc = processor(tmp_path)
        fake = FakeTransactionalProducer(fail_at=2)
        tids = install(proc, fake)
        with pytest.raises(SendFailed):
            await proc.agent.process_batch(messages(proc, 40))
        assert fake.aborted and fake.stopped
        producer: Any = proc.app.producer
        # Faust's commits skip an id without a producer: nothing of that transaction commits
        assert tids[0] not in producer._transaction_producers
        assert isinstance(proc.fatal, SendFailed)
        assert proc.crashing is not None
        await proc.crashing
        assert proc.app.crash_reason is proc.fatal

    asyncio.run(run())


def test_a_failed_delivery_crashes_the_app(tmp_path: Path) -> None:
    async def run() -> None:
        proc = processor(tmp_path)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(proc.handoff.on_delivered)
        fut.set_exception(SendFailed("delivery failed"))
        await asyncio.sleep(0)
        assert isinstance(proc.fatal, SendFailed)
        assert proc.crashing is not None
        await proc.crashing
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
        task = asyncio.ensure_future(proc.agent.process_batch(batch))
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
        assert await proc.agent.process_batch([m for m in batch if m.partition == 1]) == set()
        assert clean_ids(fake) == {f"m{i}" for i in odds} | {f"identify-m{i}" for i in odds}
        links = {k for t, _, k, _ in fake.sent if t == proc.topics.identity}
        assert {f"a{i}".encode() for i in odds} <= links

    asyncio.run(run())


def test_a_partitions_records_of_every_source_topic_go_over_as_one_batch_per_output_partition(
    tmp_path: Path,
) -> None:
    """Tracks and identifies of one partition write the same changelog partitions: handed
    over topic by topic, each changelog partition got a producer batch per source topic, and
    aiokafka makes each wait for the one before it to drain. One batch per output partition,
    the records in the order they had (the source topics' order, each topic's own order)."""

    async def run() -> None:
        proc = processor(tmp_path)
        fake = FakeTransactionalProducer()
        install(proc, fake)
        batch = messages(proc, 10) + messages(proc, 10, "identify") + messages(proc, 4, "page")
        assert await proc.agent.process_batch(batch) == set()
        assert len(fake.batches) == len(set(fake.batches)), fake.batches
        changelog = proc.changelog_topic["dedupe"]
        for partition in (0, 1):
            keys = [k for t, p, k, _ in fake.sent if t == changelog and p == partition]
            expected = [
                f"{prefix}m{i}".encode()
                for prefix, n in (("", 10), ("identify-", 10), ("page-", 4))
                for i in range(partition, n, 2)
            ]
            assert keys == expected
        assert clean_ids(fake) == (
            {f"m{i}" for i in range(10)}
            | {f"identify-m{i}" for i in range(10)}
            | {f"page-m{i}" for i in range(4)}
        )

    asyncio.run(run())


def test_at_least_once_a_partitions_records_go_through_the_plain_producer_in_one_hand_over(
    tmp_path: Path,
) -> None:
    """Without transactions there is one plain producer: every source topic's records of a
    partition go over together, one batch per output partition, without a topic group
    looked up (the assignor has none for them here)."""

    async def run() -> None:
        proc = processor(tmp_path, guarantee="at_least_once")
        assignor: Any = proc.app.assignor
        assignor._topic_groups = {}
        fake = FakeTransactionalProducer()
        producer: Any = proc.app.producer
        producer._ensure_producer = lambda: fake
        batch = messages(proc, 6) + messages(proc, 6, "identify")
        assert await proc.agent.process_batch(batch) == set()
        assert len(fake.batches) == len(set(fake.batches)), fake.batches
        assert clean_ids(fake) == {f"m{i}" for i in range(6)} | {f"identify-m{i}" for i in range(6)}

    asyncio.run(run())
