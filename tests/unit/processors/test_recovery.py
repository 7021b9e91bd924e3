"""The live state across rebalances: revoked and lost partitions dropped and read back in full,
open transactions aborted after a generation jump, and the check that table recovery loaded what
the changelogs hold."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from schemas.errors import FatalError
from tests.unit.processors.fakes import (
    FakeTransactionalProducer,
    clean_ids,
    held,
    install,
    messages,
    processor,
    raw_tps,
    recovered,
)


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
        assert await proc.recovery.on_rebalance(raw_tps(proc, everything), set(), 1) == set()
        await proc.agent.process_batch(batch)
        assert held(proc) == {0, 1}
        # partition 1 leaves (its open transaction is abandoned, to be aborted) ...
        await proc.recovery.on_rebalance(raw_tps(proc, {0, 2}), raw_tps(proc, {1}), 2)
        assert held(proc) == {0}
        dropped = "segflow_process_state_partitions_dropped_total"
        assert registry.get_sample_value(dropped, {"reason": "revoked"}) == 1
        # ... and comes back before that rebalance's recovery completed
        await proc.recovery.on_rebalance(raw_tps(proc, everything), set(), 3)
        assert 1 in proc.recovery.full_reads
        monkeypatch.setattr(proc.recovery, "active_partitions", lambda: everything)
        recovered(proc, "dedupe", {1: []})  # its changelog: nothing committed
        await proc.recovery.on_recovered()
        fake.sent.clear()
        await proc.agent.process_batch([m for m in batch if m.partition == 1])
        assert clean_ids(fake) == {f"m{i}" for i in range(1, 10, 2)}, "taken for duplicates"

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
        await proc.recovery.on_rebalance(raw_tps(proc, {0, 1}), set(), 4)
        await proc.agent.process_batch(messages(proc, 10))
        assert held(proc) == {0, 1}
        reread = await proc.recovery.on_rebalance(raw_tps(proc, {0, 1}), set(), 6)
        assert held(proc) == set()
        assert reread == {TP(t, p) for t in proc.changelog_topic.values() for p in (0, 1)}
        assert fake.aborted
        assert proc.recovery.full_reads == {0, 1}
        # a plain next generation keeps the state
        await proc.agent.process_batch(messages(proc, 10))
        assert await proc.recovery.on_rebalance(raw_tps(proc, {0, 1}), set(), 7) == set()
        assert held(proc) == {0, 1}

    asyncio.run(run())


@pytest.mark.parametrize("committed", [True, False])
def test_a_recovery_that_loaded_nothing_or_stopped_early_from_a_changelog_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """Records between the low watermark and the end offset, none applied, or more than a
    marker after the last one applied: read once more; a committed one stops the worker,
    control records and aborted writes only do not."""

    async def run() -> None:
        proc = processor(tmp_path)
        await proc.recovery.on_rebalance(raw_tps(proc, {0, 1}), set(), 1)
        consumer: Any = proc.app.consumer
        dedupe_0 = TP(proc.changelog_topic["dedupe"], 0)
        identity_1 = TP(proc.changelog_topic["identity"], 1)
        for tp in (TP(t, p) for t in proc.changelog_topic.values() for p in (0, 1)):
            consumer.low_offsets[tp], consumer.end_offsets[tp] = 0, 0  # empty
        consumer.low_offsets[dedupe_0], consumer.end_offsets[dedupe_0] = 100, 250
        consumer.low_offsets[identity_1], consumer.end_offsets[identity_1] = 0, 40
        # recovery applied these, up to offset 38: 39 is a transaction marker
        proc.recovery.last_applied[identity_1] = 38
        # and these up to offset 29 of 80: stopped early (Faust's "aborted tx until highwater"
        # takes the client's position, past records still on their way, for the end)
        dedupe_1 = TP(proc.changelog_topic["dedupe"], 1)
        consumer.low_offsets[dedupe_1], consumer.end_offsets[dedupe_1] = 0, 80
        proc.recovery.last_applied[dedupe_1] = 29
        asked: list[list[tuple[TP, int, int]]] = []

        def first_committed(kafka: Any, app_id: str, suspects: Any) -> dict[TP, int]:
            asked.append(list(suspects))
            return {dedupe_0: 120, dedupe_1: 30} if committed else {}

        monkeypatch.setattr("processors.recovery.first_committed_offsets", first_committed)
        monkeypatch.setattr(proc.recovery, "active_partitions", lambda: {0, 1})
        await proc.recovery.on_recovered()
        assert asked == [[(dedupe_0, 100, 250), (dedupe_1, 30, 80)]]
        if committed:
            assert isinstance(proc.fatal, FatalError)
            message = str(proc.fatal)
            assert f"loaded nothing from changelog {dedupe_0.topic}[0]" in message
            assert "100..250" in message and "2 changelog partitions so" in message
            assert "(the restart recovers again)" in message
            assert not proc.health.ready
            assert proc.crashing is not None
            await proc.crashing
        else:
            assert proc.fatal is None and proc.health.ready
        await proc.recovery.on_recovered()  # the other tables' callbacks: checked once
        assert len(asked) == 1

    asyncio.run(run())


def test_a_recovery_completing_after_the_next_rebalance_began_leaves_the_state_to_that_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generation 2's recovery completes as generation 3 begins, with partition 1 coming back
    and its changelog only partly read into the store: the late callbacks move nothing and do
    not mark the worker ready; generation 3's completion then moves all the store holds."""
    import time

    from processors import faust_seam
    from processors.state import encode_entry

    async def run() -> None:
        proc = processor(tmp_path)
        app: Any = proc.app
        recovery = app.tables.recovery
        assert isinstance(recovery, faust_seam.SegflowRecovery)
        await proc.recovery.on_rebalance(raw_tps(proc, {0}), set(), 2)
        await proc.recovery.on_rebalance(raw_tps(proc, {0, 1}), raw_tps(proc, {0}), 3)
        app.consumer_generation_id = 3
        monkeypatch.setattr(proc.recovery, "active_partitions", lambda: {0, 1})
        entry = encode_entry(time.time(), b"")
        recovered(proc, "dedupe", {1: [(b"m1", entry)]})  # read so far
        recovery.completing_generation = 2
        await proc.recovery.on_recovered()
        assert held(proc) == set() and not proc.health.ready
        recovered(proc, "dedupe", {1: [(b"m2", entry)]})  # the rest, read by generation 3
        recovery.completing_generation = 3
        await proc.recovery.on_recovered()
        assert held(proc) == {1} and proc.health.ready
        state = proc.deduper.state
        assert (
            len(state) == 2 and state.get(1, b"m1") is not None and state.get(1, b"m2") is not None
        )

    asyncio.run(run())
