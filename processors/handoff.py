"""The hand-off of a processed batch to Kafka: through each source partition's transactional
producer, or discarded when a rebalance made the batch stale.

Exactly once. With ``processing_guarantee="exactly_once"`` Faust keeps one transactional
producer per assigned partition number (transactional id ``<app id>-<topic group>-<partition>``)
and commits a partition's consumed offsets inside that producer's transaction. Faust 0.15.3
itself only routes table changelog writes through those producers: ``topic.send`` to a topic the
app does not consume goes through the plain producer, outside every transaction. So everything a
record produces (clean event, identity links, schema changes, DLQ copy and the changelog writes
of its state) goes out here through the transactional producer of the record's own partition,
directly: output, state and the consumed offset commit or abort together. A record whose output
was committed before its offset (Faust commits on a timer, possibly in the middle of a batch) is
reprocessed after a crash, finds its messageId in the committed dedupe state and is dropped, so
nothing is duplicated either way. A batch's hand-off is therefore never cut short: a stop (Faust
cancels the agent, then commits the open transactions) waits for it to finish
(:func:`finish_despite_cancel`), and a hand-off that fails aborts its partition's transaction and
crashes the app (:class:`~processors.crash.WorkerCrash`), whose next start rebuilds the state
from what was committed.

Generation. Each batch is tied (:class:`Ticket`) to the generation that read it and to its
partitions' lineage (the epochs of :class:`~processors.recovery.StateRecovery`). A partition's
output goes out only while the generation is the same and the flow is not suspended; otherwise
it is discarded, not produced and not acked, and the batch's state changes for that partition
are undone (or were already dropped with the partition), so the records read again are
processed anew rather than taken for duplicates of their own discarded processing. (Drift's
known fields are not undone: a discarded batch's schema-change records are not sent again.)
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

from processors import faust_seam
from processors.crash import WorkerCrash
from processors.faust_seam import SegflowApp
from processors.metrics import ProcessorMetrics
from processors.recovery import LiveState
from processors.state import Journal
from schemas.errors import FatalError

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
#: one record to produce: (topic, key, value, headers, partition or None for the partitioner)
Send = tuple[str, bytes | None, bytes | None, Headers, int | None]

#: seconds an abort (or the stop of the aborted producer) may take after a failed hand-off
ABORT_TIMEOUT_S = 30.0


@dataclass(slots=True)
class Ticket:
    """What a batch's output is tied to: the consumer generation that read it, the lineage
    (epoch) of each of its partitions, and the journal of its state changes."""

    generation: int
    journal: Journal
    epochs: dict[int, int] = field(default_factory=dict)
    records: dict[int, int] = field(default_factory=dict)
    discarded: set[int] = field(default_factory=set)


class Handoff:
    """Sends a batch's records per source partition, or discards them (module doc)."""

    def __init__(
        self,
        app: SegflowApp,
        exactly_once: bool,
        epochs: Mapping[int, int],
        live: LiveState,
        metrics: ProcessorMetrics,
        crash: WorkerCrash,
    ) -> None:
        """`epochs`: each partition's lineage, bumped by state recovery when it drops one."""
        self.app = app
        self.exactly_once = exactly_once
        self.epochs = epochs
        self.live = live
        self.metrics = metrics
        self.crash = crash

    async def send_all(self, out: dict[tuple[str, int], list[Send]], ticket: Ticket) -> None:
        """Hand every partition's records to Kafka, or discard them; a failure stops the worker.

        A partition's records of every source topic go over in one hand-over when those topics
        share its transactional producer (one topic group, as the raw topics are): each output
        partition (the clean topic's, every changelog's) then gets one producer batch per agent
        batch. Handed over topic by topic, a changelog partition written for several source
        topics got a batch each, and aiokafka keeps one undrained batch per partition, so each
        after the first waited for the one before it to linger and drain (~5 ms, dozens of
        times a batch: most of a live batch's wall time, bench/results/cost-per-event.md).
        The records of each output partition keep the order they had.

        After a failure the live state may hold entries whose records never went out, so the
        agent must not simply be restarted (what Faust does with an agent that raised): the app
        crashes and the next start rebuilds the state from the committed changelogs.
        """
        by_partition: dict[int, list[tuple[str, list[Send]]]] = defaultdict(list)
        for (topic, partition), sends in out.items():
            by_partition[partition].append((topic, sends))
        try:
            for partition, items in by_partition.items():
                started = False
                for group, topics, sends in self._by_producer(items):
                    if not await self._send(group, topics, partition, sends, ticket, started):
                        self.discard(partition, ticket)
                        break
                    started = True
        except Exception as exc:
            self.crash.fail(exc)
            raise

    def _by_producer(
        self, items: list[tuple[str, list[Send]]]
    ) -> list[tuple[Any, list[str], list[Send]]]:
        """One partition's (source topic, records) merged per topic group (one transactional
        producer each; at least once, all go through the one plain producer: group None), in
        their order, as (group, source topics, records)."""
        group_for = self.app.assignor.group_for_topic if self.exactly_once else None
        if len(items) == 1:
            topic, sends = items[0]
            return [(group_for(topic) if group_for else None, [topic], sends)]
        merged: dict[Any, tuple[Any, list[str], list[Send]]] = {}
        for topic, sends in items:
            group = group_for(topic) if group_for else None
            _, topics, all_sends = merged.setdefault(group, (group, [], []))
            topics.append(topic)
            all_sends.extend(sends)
        return list(merged.values())

    def may_send(self, partition: int, ticket: Ticket, started: bool) -> bool:
        """Whether a partition's output of the batch `ticket` stands for may go out now: its
        lineage unchanged, and (before its first record went out) the generation that read it
        still current with the flow not suspended by a rebalance."""
        if self.epochs[partition] != ticket.epochs[partition]:
            return False
        if started:  # its first records went into this lineage's transaction: finish it
            return True
        app = self.app
        return app.consumer_generation_id == ticket.generation and app.flow_control.is_active()

    def discard(self, partition: int, ticket: Ticket) -> None:
        """Leave a partition's output of the batch out: undo the batch's state changes for it
        (unless its state was dropped meanwhile) and count its records as stale."""
        if partition in ticket.discarded:
            return
        ticket.discarded.add(partition)
        if self.epochs[partition] == ticket.epochs[partition]:
            self.live.deduper.state.rollback(partition, ticket.journal)
            self.live.graph.state.rollback(partition, ticket.journal)
        n = ticket.records.get(partition, 0)
        self.metrics.stale_records.inc(n)
        logger.info(
            "discarding the output of %d records of partition %s read in generation %s "
            "(now %s): read again from the committed offsets",
            n,
            partition,
            ticket.generation,
            self.app.consumer_generation_id,
        )

    async def _send(
        self,
        group: Any,
        source_topics: list[str],
        partition: int,
        sends: list[Send],
        ticket: Ticket,
        started: bool,
    ) -> bool:
        """Hand the records of one partition of `source_topics` (topic group `group`; None at
        least once) over; False when they must be discarded."""
        app = self.app
        if not self.exactly_once:
            if not self.may_send(partition, ticket, started):
                return False
            if sends:
                await self._hand_over(faust_seam.plain_producer(app), sends)
            return True
        tid = f"{app.conf.id}-{group}-{partition}"
        txp = faust_seam.transaction_producer(app, tid)
        if txp is None:
            assignment = app.consumer.assignment()
            if not self.may_send(partition, ticket, started) or any(
                TP(t, partition) not in assignment for t in source_topics
            ):
                # revoked while this batch was processed: its new owner processes it again
                # from the committed offset; writing it here (outside any transaction) would
                # duplicate
                return False
            # Faust dropped the producer: producer fenced. Stop rather than write outside the
            # transaction; the restart resumes from the committed offsets.
            raise FatalError(
                f"no transactional producer {tid} for {', '.join(source_topics)}[{partition}]"
            )
        async with faust_seam.transaction_lock(app, tid):
            if not self.may_send(partition, ticket, started):
                return False
            if not sends:
                return True
            try:
                await self._hand_over(txp, sends)
            except Exception:
                await self._abandon_transaction(tid, txp)
                raise
        return True

    async def _abandon_transaction(self, tid: str, txp: Any) -> None:
        """Abort a partition's transaction after a failed hand-off, and drop its producer.

        Nothing of that transaction may commit: what was handed before the failure (e.g. clean
        events without their dedupe entries) nor the offsets of the batches acked before it,
        whose output the abort discards. Faust commits only the transactional ids it holds a
        producer for (the stop's final commit included), so the producer goes first; if the
        abort itself fails, the next owner's producer aborts the transaction when it starts.
        Called with the transaction's lock held.
        """
        faust_seam.forget_transaction_producer(self.app, tid, txp)
        for step in (txp.abort_transaction, txp.stop):
            try:
                await asyncio.wait_for(step(), ABORT_TIMEOUT_S)
            except Exception as exc:
                logger.error("%s of transaction %s failed: %r", step.__name__, tid, exc)
        logger.error("aborted transaction %s after a failed hand-off", tid)

    async def _hand_over(self, aioproducer: Any, sends: list[Send]) -> None:
        """Give the records to aiokafka: one BatchBuilder per (topic, partition) where the
        partition is known (clean events, changelogs), plain sends for the rest."""
        batches: dict[tuple[str, int], Any] = {}
        for topic, key, value, headers, part in sends:
            if part is None:
                fut = await aioproducer.send(topic, value, key=key, headers=headers)
                fut.add_done_callback(self.on_delivered)
                continue
            batch = batches.get((topic, part))
            if batch is None:
                batch = batches[(topic, part)] = aioproducer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                fut = await aioproducer.send_batch(batch, topic, partition=part)
                fut.add_done_callback(self.on_delivered)
                batch = batches[(topic, part)] = aioproducer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise FatalError(f"a record for {topic} is larger than a producer batch")
        for (topic, part), batch in batches.items():
            if batch.record_count():
                fut = await aioproducer.send_batch(batch, topic, partition=part)
                fut.add_done_callback(self.on_delivered)

    def on_delivered(self, fut: Any) -> None:
        """Delivery callback of every send: a failed delivery crashes the app."""
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self.crash.fail(exc)


async def finish_despite_cancel(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` to its end even when the caller is cancelled meanwhile, then re-raise the
    cancellation; otherwise return or raise what `coro` did."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # a failure was handled by the task itself (see Handoff.send_all)
        raise asyncio.CancelledError
    task.result()
