"""The processors' state across rebalances: which partitions' live state stands, what table
recovery reads back into it, and the check that recovery loaded what it should.

State. Three Faust tables with a memory store and a compacted changelog each (built in
:mod:`processors.app_config`): ``dedupe`` (messageId -> first sighting), ``identity``
(identifier -> canonical userId) and ``drift`` (known field types). The live state is in
:mod:`processors.state` structures (:class:`LiveState`), bounded by the settings; the Faust
tables serve recovery only: after an assignment Faust reads the changelogs into them and
:meth:`StateRecovery.on_recovered` moves the entries into the live state.

Lineage. A partition's live state must always equal its committed changelog plus the writes of
its open transaction, which commit or abort with the output they belong to. So:

- Revoke (and lost membership). When a partition leaves this worker (Faust's revoked set at
  each rebalance), its transactional producer is stopped and its open transaction will be
  aborted by whoever starts the next producer of that id: its in-memory dedupe and identity
  state is dropped at once (:meth:`StateRecovery.on_rebalance`), before table recovery starts,
  and read back from the changelog in full if it comes back, even before the recovery of the
  rebalance in between completed. When the consumer generation jumps by more than one, this
  member was out of the group meanwhile (its partitions may have been processed elsewhere):
  every partition it keeps is treated as revoked and its open transaction aborted.
- Each drop bumps the partition's epoch (`StateRecovery.epochs`): a batch read in an earlier
  epoch never goes out for it (see :mod:`processors.handoff`).
- Recovery sanity. See :meth:`StateRecovery.check`: a changelog partition read in full that
  holds committed records after the last one recovery applied (none applied, or recovery
  declared done early) stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from faust.types import TP, EventT

from processors import faust_seam
from processors.app_config import build_tables
from processors.crash import WorkerCrash
from processors.dedupe import DEDUPE_TABLE, Deduper
from processors.drift import DRIFT_TABLE, KnownFields
from processors.faust_seam import SegflowApp
from processors.metrics import ProcessorMetrics
from processors.settings import ProcessorSettings
from processors.state import PartitionedState
from processors.stitching import IDENTITY_TABLE, IdentityGraph
from runtime.health import HealthState
from runtime.kafka_config import consumer_config
from runtime.settings import KafkaSettings
from schemas.errors import FatalError, RetryableError

logger = logging.getLogger(__name__)

#: seconds the check of a changelog that recovery read nothing from may take
VERIFY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LiveState:
    """The state the pipeline reads and writes: dedupe entries and identity links per
    partition, and the known fields of drift detection (shared by every partition)."""

    deduper: Deduper
    graph: IdentityGraph
    known: KnownFields

    def partitioned(self) -> dict[str, PartitionedState]:
        """The per-partition states by table name."""
        return {DEDUPE_TABLE: self.deduper.state, IDENTITY_TABLE: self.graph.state}

    def report(self, metrics: ProcessorMetrics) -> None:
        """Set the state gauges: entries, bytes and evictions per table."""
        m = metrics
        m.state_entries.labels(DEDUPE_TABLE).set(len(self.deduper.state))
        m.state_entries.labels(IDENTITY_TABLE).set(len(self.graph.state))
        m.state_entries.labels(DRIFT_TABLE).set(len(self.known))
        m.state_bytes.labels(DEDUPE_TABLE).set(self.deduper.state.nbytes())
        m.state_bytes.labels(IDENTITY_TABLE).set(self.graph.state.nbytes())
        for table, state in self.partitioned().items():
            for reason, n in state.evictions.items():
                m.state_evictions.labels(table, reason).set(n)
        m.state_evictions.labels(DRIFT_TABLE, "max_entries").set(self.known.evictions)


class StateRecovery:
    """Owns the state tables and the lineage of each partition's live state (module doc)."""

    def __init__(
        self,
        app: SegflowApp,
        settings: ProcessorSettings,
        partitions: int,
        live: LiveState,
        metrics: ProcessorMetrics,
        health: HealthState,
        crash: WorkerCrash,
    ) -> None:
        self.app = app
        self.settings = settings
        self.raw = frozenset(settings.kafka.topics.all_raw())
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        self.live = live
        self.metrics = metrics
        self.health = health
        self.crash = crash
        #: lineage of each partition's live state: bumped whenever it is dropped
        self.epochs: defaultdict[int, int] = defaultdict(int)
        self.generation: int | None = None
        self.assigned: set[int] = set()
        #: partitions whose next recovery reads their changelogs in full
        self.full_reads: set[int] = set()
        #: changelog partition -> the highest offset table recovery applied since it was reset
        #: (absent: none applied)
        self.last_applied: dict[TP, int] = {}
        self.tables = build_tables(app, partitions, self.on_changelog_event)
        self.changelog_topic = {
            name: table.changelog_topic.get_topic_name() for name, table in self.tables.items()
        }
        for table in self.tables.values():
            table.on_recover(self.on_recovered)

    def active_partitions(self) -> set[int]:
        raw = self.raw
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in raw}

    def changelog_tps(self, partitions: set[int]) -> set[TP]:
        return {TP(t, p) for t in self.changelog_topic.values() for p in partitions}

    def drop_partition(self, partition: int) -> None:
        """Forget a partition's live state (it is read back from its changelog if it returns)
        and start a new lineage, so no batch read before goes out for it."""
        self.epochs[partition] += 1
        for state in self.live.partitioned().values():
            state.drop_partition(partition)
        for table in self.tables.values():
            faust_seam.forget_store_partition(table, partition)

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], generation: int) -> set[TP]:
        """Called at each rebalance before table recovery starts (see the module doc, Lineage).

        Drops the live state of every partition that left; on a generation jump (this member
        was out of the group meanwhile) also of every partition it keeps, whose open
        transactions are aborted and whose changelogs are returned, to be read in full.
        """
        raw = self.raw
        kept = {tp.partition for tp in assigned if tp.topic in raw}
        before = set(self.assigned)
        held = set(self.live.deduper.state.partitions()) | set(self.live.graph.state.partitions())
        gone = {tp.partition for tp in revoked if tp.topic in raw} | (held | before) - kept
        lost: set[int] = set()
        if self.generation is not None and generation > self.generation + 1:
            lost = kept & before
            logger.warning(
                "consumer generation went from %s to %s: this worker was out of the group, "
                "state of partitions %s is read back from the changelogs",
                self.generation,
                generation,
                sorted(lost),
            )
        if self.generation is None or generation > self.generation:
            self.generation = generation
        for partition in sorted(gone | lost):
            self.drop_partition(partition)
        for reason, parts in (("revoked", gone - kept), ("lost", lost)):
            if parts:
                self.metrics.state_drops.labels(reason).inc(len(parts))
        if lost and self.exactly_once:
            for partition in sorted(lost):
                for group in {self.app.assignor.group_for_topic(t) for t in raw}:
                    await faust_seam.restart_transaction(
                        self.app, f"{self.app.conf.id}-{group}-{partition}"
                    )
        fresh = (kept - before) | lost
        self.full_reads = (self.full_reads & kept) | fresh
        for tp in self.changelog_tps(fresh):
            self.last_applied.pop(tp, None)
        self.assigned = kept
        if gone - kept:
            logger.info("dropped the state of revoked partitions %s", sorted(gone - kept))
        return self.changelog_tps(lost)

    async def on_changelog_event(self, event: EventT) -> None:
        """Note the highest offset table recovery applies, per changelog partition."""
        message = event.message
        if message.offset > self.last_applied.get(message.tp, -1):
            self.last_applied[message.tp] = message.offset

    async def on_recovered(self) -> None:
        """Move what Faust read back from the changelogs into the live state (once per table).

        Not for a recovery that a newer rebalance superseded (its completion ran late, see
        :class:`~processors.faust_seam.SegflowRecovery`): the store may hold only part of the
        new partitions' changelogs then, and the new generation's recovery is yet to read them;
        its own completion moves everything the store holds."""
        completing = faust_seam.completing_generation(self.app)
        current = self.app.consumer_generation_id
        if completing is not None and completing != current:
            logger.info(
                "the table recovery of generation %s completed after generation %s began: "
                "the state is left to that generation's recovery",
                completing,
                current,
            )
            return
        active = self.active_partitions()
        partitioned = self.live.partitioned()
        for name, table in self.tables.items():
            by_partition = faust_seam.take_recovered(table)
            if name == DRIFT_TABLE:
                self.live.known.load([kv for items in by_partition.values() for kv in items])
                continue
            state = partitioned[name]
            for held in state.partitions():
                if held not in active:
                    state.drop_partition(held)
            for p, items in by_partition.items():
                if p not in active:
                    continue
                if p in state.partitions():
                    for key, value in items:
                        state.load_one(p, key, value)
                else:
                    state.load(p, items)
                self.metrics.recovered_entries.labels(name).inc(len(items))
        self.live.report(self.metrics)
        if not await self.check(active):
            return
        self.health.set_ready(True, f"processing {len(active)} partitions")
        logger.info("state recovered for partitions %s", sorted(active))

    async def check(self, active: set[int]) -> bool:
        """False (and the worker stops) when a recovery left out committed records of a
        changelog.

        The rule, for each changelog partition of each partition whose changelogs this recovery
        read from their start (newly assigned, or read again after a lost membership): if table
        recovery applied no record of it while the broker reports records between its low
        watermark and its end offset (the last stable offset), or more than one offset (a
        transaction marker) lies between the last record it applied and the end, those records
        are read once more with a read_committed consumer. Under exactly-once a changelog can
        legitimately end in control records and aborted writes, which no read_committed consumer
        receives; but if that read gets a record, recovery skipped committed state: a fetch
        answer lost on its way, or Faust's "aborted tx until highwater" shortcut, which takes
        the client's position for the end of what was applied while fetched records are still
        on their way to the tables (seen on the broker: a full read declared done 0.2 s after it
        started, nothing applied). Starting with an empty or partial state would let copies
        through, so the worker stops with FatalError naming the changelog, partition and
        offsets, and its restart recovers again. Partitions kept across a rebalance read only
        what was written since their last recovery, their own writes among it, and are not
        checked.
        """
        due = self.full_reads & active
        if not due:
            return True
        self.full_reads -= due
        consumer: Any = self.app.consumer
        suspects = []
        for tp in sorted(self.changelog_tps(due)):
            low, end = consumer.low_offsets.get(tp), consumer.end_offsets.get(tp)
            if low is None or end is None:
                continue
            # after the last record applied; past one offset (a transaction marker) before the
            # end, records may have been left out
            last = self.last_applied.get(tp)
            after = low if last is None else max(low, last + 1)
            if end - after > (0 if last is None else 1):
                suspects.append((tp, after, end))
        if not suspects:
            return True
        error: FatalError | None = None
        try:
            found = await asyncio.to_thread(
                first_committed_offsets, self.settings.kafka, self.settings.app_id, suspects
            )
        except Exception as exc:
            found = {}
            error = FatalError(
                f"cannot check the changelogs table recovery read nothing from: {exc}"
            )
        if found:
            tp, low, end = next(s for s in suspects if s[0] in found)
            last = self.last_applied.get(tp)
            what = (
                "loaded nothing from changelog "
                if last is None
                else f"stopped at offset {last} of changelog "
            )
            error = FatalError(
                f"table recovery {what}{tp.topic}[{tp.partition}] although it holds committed "
                f"records after it (offsets {low}..{end}, first committed at {found[tp]}); "
                f"{len(found)} changelog partitions so; stopping rather than starting with a "
                "partial state (the restart recovers again)"
            )
        if error is None:
            logger.info(
                "changelog partitions %s hold no committed record after what recovery applied",
                [s[0] for s in suspects],
            )
            return True
        logger.error("%s", error)
        self.health.set_ready(False, "table recovery failed")
        self.crash.fail(error)
        return False


def first_committed_offsets(
    kafka: KafkaSettings, app_id: str, partitions: Sequence[tuple[TP, int, int]]
) -> dict[TP, int]:
    """For each (changelog partition, low, end): the offset of the first record a
    read_committed consumer gets in [low, end), for those that have one (blocking)."""
    consumer = Consumer(
        consumer_config(
            kafka,
            "process-recovery-check",
            f"{app_id}-recovery-check",
            **{"enable.partition.eof": True},
        )
    )
    ends = {(tp.topic, tp.partition): end for tp, _, end in partitions}
    pending = set(ends)
    found: dict[TP, int] = {}
    deadline = time.monotonic() + VERIFY_TIMEOUT_S
    try:
        consumer.assign([TopicPartition(tp.topic, tp.partition, low) for tp, low, _ in partitions])
        while pending:
            if time.monotonic() > deadline:
                raise RetryableError(f"no answer within {VERIFY_TIMEOUT_S:.0f} s")
            for msg in consumer.consume(500, 0.5):
                key = (str(msg.topic()), int(msg.partition() or 0))
                if key not in pending:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(key)
                    continue
                offset = int(msg.offset() or 0)
                if offset < ends[key]:
                    found[TP(*key)] = offset
                pending.discard(key)
    finally:
        consumer.close()
    return found
