"""The processors' one agent: fetched batches in, the pure pipeline, records out.

The agent is thin: it takes the batches of messages the consumer fetched
(:class:`~processors.faust_seam.LeanConsumer` hands each fetch over as one list), decodes them,
runs the pure :class:`~processors.pipeline.Pipeline` and turns each outcome into the records to
send (clean event, identity links, schema changes, changelog writes, or a DLQ copy), which
:class:`~processors.handoff.Handoff` gives to the record's partition's transaction. A batch
fetched before a rebalance (another consumer generation, or the flow suspended) is dropped
unprocessed and unacked: its partitions are read again from the committed offsets.

A record that cannot be processed goes to the DLQ with the headers of :mod:`schemas.dlq`. A
record the pipeline refuses (``RecordError``) keeps its reason; any other exception (a bug) is
named by its type only, with a fixed message: an exception's text may quote a key or a value
(raw PII), and DLQ headers are read by people and tools that must not see it. The worker's log
gets the stack frames, without the exception's text either.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faust.types import Message
from mode.utils.queues import FlowControlQueue

from processors import faust_seam
from processors.alerts import WebhookAlerter
from processors.app_config import TopicLayout
from processors.crash import WorkerCrash
from processors.drift import DRIFT_TABLE
from processors.faust_seam import SegflowApp
from processors.handoff import Handoff, Send, Ticket, finish_despite_cancel
from processors.metrics import ProcessorMetrics
from processors.pipeline import DUPLICATE, Outcome, Pipeline
from processors.recovery import LiveState
from processors.settings import ProcessorSettings
from processors.state import ChangelogWrite, Journal
from schemas.codec import CLEAN_EVENT, IDENTITY_LINK, RAW_EVENT, SCHEMA_CHANGE, AvroCodec
from schemas.dlq import (
    PROCESSING_FAILED,
    dlq_headers,
    failure_reason,
    log_failure,
    origin_headers,
)
from schemas.errors import FatalError, RecordError
from schemas.topics import CALL_TYPES

logger = logging.getLogger(__name__)

#: collections of the youngest generation between two full collections, while the agent runs
#: (CPython's default: 10). Each full collection walks every object of the worker (Faust's,
#: aiokafka's, the state's) and at the default they took ~10% of its CPU in the steady state,
#: the young ones ~4%; at 1,000 the steady state ran none (bench/results/cost-per-event.md).
#: The young generations keep their defaults, so short-lived cycles are still collected.
GC_FULL_THRESHOLD = 1_000


@dataclass(slots=True)
class Tallies:
    """Per-batch counts, added to the metrics once per batch rather than once per event."""

    masked: dict[str, int] = field(default_factory=dict)
    links: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    lateness: dict[str, list[float]] = field(default_factory=dict)


class BatchAgent:
    """Runs the pipeline over fetched batches and hands the output over (module doc)."""

    def __init__(
        self,
        app: SegflowApp,
        settings: ProcessorSettings,
        layout: TopicLayout,
        pipeline: Pipeline,
        live: LiveState,
        handoff: Handoff,
        changelog_topic: dict[str, str],
        metrics: ProcessorMetrics,
        crash: WorkerCrash,
        alerter: WebhookAlerter | None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.topics = settings.kafka.topics
        self.layout = layout
        self.pipeline = pipeline
        self.live = live
        self.handoff = handoff
        self.changelog_topic = changelog_topic
        self.metrics = metrics
        self.crash = crash
        self.alerter = alerter
        self.codec = AvroCodec()
        for ct in CALL_TYPES:  # every call type's series exposed from the start, at zero
            metrics.lateness.observe_all((ct,), ())
        # call type -> (clean topic, whether it keeps the raw record's partition number)
        self._clean_routes = {
            ct: (
                self.topics.clean(ct),
                layout.clean_partitions.get(self.topics.clean(ct)) == layout.raw_partitions,
            )
            for ct in CALL_TYPES
        }
        # fetched batches, from the consumer's fetch loop to the agent; cleared by Faust's flow
        # control on a rebalance, like the agents' own channels
        self.batches: FlowControlQueue[list[Message]] = FlowControlQueue(
            maxsize=2, flow_control=app.flow_control, clear_on_resume=True
        )

    async def run(self, stream: Any) -> None:
        """Process the fetched batches; ack each message once its output is handed over.

        The agent's own stream stays empty: the consumer puts whole fetches on ``batches``
        (the conductor's per-record path, events and channel cost more than processing did).
        A fetch smaller than ``batch_max`` waits up to ``batch_within_s`` for the next ones.
        """
        young, middle, full = gc.get_threshold()
        gc.set_threshold(young, middle, max(full, GC_FULL_THRESHOLD))
        try:
            await self._consume()
        finally:
            gc.set_threshold(young, middle, full)

    async def _consume(self) -> None:
        s = self.settings
        queue = self.batches
        loop = asyncio.get_running_loop()
        while True:
            batch = list(await queue.get())
            deadline = loop.time() + s.batch_within_s
            while len(batch) < s.batch_max:
                if not queue.empty():
                    batch += queue.get_nowait()
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch += await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            for start in range(0, len(batch), s.batch_max):
                if self.crash.error is not None:
                    raise FatalError(f"stopping after a fatal error: {self.crash.error!r}")
                chunk = self.current(batch[start : start + s.batch_max])
                if not chunk:
                    continue
                started = time.perf_counter()
                discarded = await self.process_batch(chunk)
                # a rebalance during the hand-over: no acks, the partitions' owners read the
                # records again from the committed offsets (dedupe drops what did get out)
                current = self.current(chunk)
                if discarded:
                    current = [m for m in current if m.partition not in discarded]
                faust_seam.ack_all(self.app.consumer, current)
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
                self.metrics.batch_events.observe(len(chunk))

    def current(self, messages: list[Message]) -> list[Message]:
        """The messages fetched in the current consumer generation; none while a rebalance is
        going on. The others are dropped: every rebalance ends with Faust seeking the
        partitions back to their committed offsets, so they are read again."""
        app = self.app
        generation = app.consumer_generation_id
        if not app.flow_control.is_active():
            current = []
        elif all(m.generation_id == generation for m in messages):
            return messages
        else:
            current = [m for m in messages if m.generation_id == generation]
        stale = len(messages) - len(current)
        self.metrics.stale_records.inc(stale)
        logger.info("dropping %d records fetched before a rebalance", stale)
        return current

    async def process_batch(self, messages: Sequence[Message]) -> set[int]:
        """Process a batch and hand its records to Kafka, per source partition; returns the
        partitions whose output was discarded (a rebalance since the batch was read: see
        :mod:`processors.handoff`, Generation), whose records must not be acked."""
        now = datetime.now(UTC)
        out: dict[tuple[str, int], list[Send]] = defaultdict(list)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        tallies = Tallies()
        ticket = Ticket(self.app.consumer_generation_id, Journal())
        for msg in messages:
            ticket.records[msg.partition] = ticket.records.get(msg.partition, 0) + 1
        epochs = self.handoff.epochs
        ticket.epochs = {p: epochs[p] for p in ticket.records}
        # journal the batch's state changes until its hand-off starts (nothing else changes
        # the state meanwhile: no await in between)
        dedupe_state, identity_state = self.live.deduper.state, self.live.graph.state
        dedupe_state.journal = identity_state.journal = ticket.journal
        try:
            self._process_all(messages, now, out, counts, tallies, ticket.journal)
        finally:
            dedupe_state.journal = identity_state.journal = None
        self._flush_metrics(counts, tallies)
        # the state above already holds the batch's dedupe and identity entries: the hand-off
        # must not stop half-way (a stop cancels the agent, then commits the open transactions)
        await finish_despite_cancel(self.handoff.send_all(out, ticket))
        self.live.report(self.metrics)
        return ticket.discarded

    def _process_all(
        self,
        messages: Sequence[Message],
        now: datetime,
        out: dict[tuple[str, int], list[Send]],
        counts: dict[tuple[str, str], int],
        tallies: Tallies,
        journal: Journal,
    ) -> None:
        decode = self.codec.decode
        process = self.pipeline.process
        changes = journal.changes
        for msg in messages:
            sends = out[(msg.topic, msg.partition)]
            writes: list[ChangelogWrite] = []
            mark = len(changes)
            try:
                raw = decode(RAW_EVENT, msg.value, micros=True)
                outcome = process(raw, msg.key, msg.partition, now, writes)
                self._collect(outcome, msg, sends, writes, counts, tallies)
            except RecordError as exc:
                self._undo(journal, mark, writes)
                exc.at(msg.topic, msg.partition, msg.offset)
                sends.append(self._dlq(msg, exc.reason, exc.code))
                counts[(self.topics.call_type_of(msg.topic), "dlq")] += 1
                self.metrics.dlq.labels(exc.code).inc()
                logger.warning("record to DLQ: %s", exc)
            except Exception as exc:  # a bug must not stop the partition: DLQ with the reason
                self._undo(journal, mark, writes)
                reason = failure_reason(exc, "processor")
                sends.append(self._dlq(msg, reason, PROCESSING_FAILED))
                counts[(self.topics.call_type_of(msg.topic), "dlq")] += 1
                self.metrics.dlq.labels(PROCESSING_FAILED).inc()
                log_failure(
                    logger, f"processing failed at {msg.topic}[{msg.partition}]@{msg.offset}", exc
                )

    def _undo(self, journal: Journal, mark: int, writes: list[ChangelogWrite]) -> None:
        """Undo the dedupe and identity changes a record made before it failed (journaled
        since `mark`) and the fields drift detection remembered for it (its `writes` to the
        drift changelog): its changelog writes are not sent, so the state keeps matching the
        changelog, the record sent to the DLQ is not taken for a duplicate when it is replayed
        after a fix, and the next record with its new fields still reports them."""
        drift_keys = [w.key.decode() for w in writes if w.table == DRIFT_TABLE]
        if drift_keys:
            self.live.known.forget(drift_keys)
        changes = journal.changes
        if len(changes) <= mark:
            return
        tail = Journal(changes[mark:])
        del changes[mark:]
        for partition in {c[0] for c in tail.changes}:
            self.live.deduper.state.rollback(partition, tail)
            self.live.graph.state.rollback(partition, tail)

    def _collect(
        self,
        outcome: Outcome,
        msg: Message,
        sends: list[Send],
        writes: list[ChangelogWrite],
        counts: dict[tuple[str, str], int],
        tallies: Tallies,
    ) -> None:
        """Add a processed record's output to `sends` and its counts to the tallies; all or
        nothing: every record is encoded before anything is added, so a record that cannot
        be encoded leaves no part of its output behind (it goes to the DLQ)."""
        call_type = outcome.call_type
        if outcome.dropped is not None:
            counts[(call_type, outcome.dropped)] += 1
            if outcome.dropped == DUPLICATE:
                tallies.lateness.setdefault(call_type, []).append(outcome.lateness_s)
            return
        encode = self.codec.encode
        clean_topic, same = self._clean_routes[call_type]
        own: list[Send] = [
            (
                clean_topic,
                msg.key,
                encode(CLEAN_EVENT, outcome.clean),  # type: ignore[arg-type]
                origin_headers(msg.headers),
                msg.partition if same else None,
            )
        ]
        if outcome.links:
            identity = self.topics.identity
            for link in outcome.links:
                own.append(
                    (identity, link["identifier"].encode(), encode(IDENTITY_LINK, link), [], None)
                )
        for change in outcome.changes:
            key = f"{change['source']}.{change['callType']}.{change['event'] or ''}"
            own.append(
                (
                    self.topics.schema_changes,
                    f"{key}.{change['field']}".encode(),
                    encode(SCHEMA_CHANGE, change),
                    [],
                    None,
                )
            )
        # nothing below raises
        sends += own
        changelog = self.changelog_topic
        for table, partition, entry_key, entry_value in writes:
            sends.append((changelog[table], entry_key, entry_value, [], partition))
        lateness = tallies.lateness.get(call_type)
        if lateness is None:
            lateness = tallies.lateness[call_type] = []
        lateness.append(outcome.lateness_s)
        counts[(call_type, "clean")] += 1
        masked = tallies.masked
        for entry in outcome.masked:
            action = entry[entry.rindex(":") + 1 :]
            masked[action] = masked.get(action, 0) + 1
        for link in outcome.links:
            kind = link["identifierType"]
            tallies.links[kind] = tallies.links.get(kind, 0) + 1
        if outcome.refused:
            tallies.refused[outcome.refused] = tallies.refused.get(outcome.refused, 0) + 1
        for change in outcome.changes:
            self.metrics.schema_changes.labels(change["change"]).inc()
            if self.alerter is not None:
                self.alerter.add(change)

    def _flush_metrics(self, counts: dict[tuple[str, str], int], tallies: Tallies) -> None:
        m = self.metrics
        for (call_type, outcome_name), n in counts.items():
            m.events.labels(call_type, outcome_name).inc(n)
            if outcome_name == DUPLICATE:
                m.duplicates.labels(call_type).inc(n)
        for action, n in tallies.masked.items():
            m.masked_fields.labels(action).inc(n)
        for kind, n in tallies.links.items():
            m.identity_links.labels(kind).inc(n)
        for reason, n in tallies.refused.items():
            m.identity_refused.labels(reason).inc(n)
        for call_type, values in tallies.lateness.items():
            m.lateness.observe_all((call_type,), values)

    def _dlq(self, msg: Message, reason: str, code: str) -> Send:
        """The DLQ copy of `msg`: its key and bytes as read, the headers of schemas.dlq."""
        headers = dlq_headers(reason, code, msg.topic, msg.partition, msg.offset, msg.headers)
        return (self.topics.dlq, msg.key, msg.value, headers, None)
