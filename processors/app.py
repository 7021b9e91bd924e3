"""The Faust app: one agent over every raw topic, state in changelogged tables, one transaction
per partition.

The agent is thin: it takes the batches of messages the consumer fetched
(:class:`~processors.faust_seam.LeanConsumer` hands each fetch over as one list), decodes them,
runs the pure :class:`~processors.pipeline.Pipeline` and hands what comes back to Kafka. A batch
fetched before a rebalance (another consumer generation, or the flow suspended) is dropped
unprocessed and unacked: its partitions are read again from the committed offsets. Every private
Faust member the app relies on is reached through :mod:`processors.faust_seam`, checked when the
worker starts.

Exactly once. With ``processing_guarantee="exactly_once"`` Faust keeps one transactional
producer per assigned partition number (transactional id ``<app id>-<topic group>-<partition>``)
and commits a partition's consumed offsets inside that producer's transaction. Faust 0.15.3
itself only routes table changelog writes through those producers: ``topic.send`` to a topic the
app does not consume goes through the plain producer, outside every transaction. So this module
sends everything a record produces (clean event, identity links, schema changes, DLQ copy and
the changelog writes of its state) through the transactional producer of the record's own
partition, directly: output, state and the consumed offset commit or abort together. A record
whose output was committed before its offset (Faust commits on a timer, possibly in the middle of
a batch) is reprocessed after a crash, finds its messageId in the committed dedupe state and is
dropped, so nothing is duplicated either way. A batch's hand-off is therefore never cut short: a
stop (Faust cancels the agent, then commits the open transactions) waits for it to finish, and a
hand-off that fails aborts its partition's transaction and crashes the app, whose next start
rebuilds the state from what was committed.

State. Three tables with a memory store (RocksDB is not installed) and a compacted changelog each:
``dedupe`` (messageId -> first sighting), ``identity`` (identifier -> canonical userId) and
``drift`` (known field types). The live state is in :mod:`processors.state` structures, bounded by
the settings; the Faust tables serve recovery: after an assignment Faust reads the changelogs
into them and :meth:`ProcessorApp._on_recovered` moves the entries into the live state. Standby
replicas are off: a partition that moves is rebuilt from its changelog.

Lineage. A partition's live state must always equal its committed changelog plus the writes of
its open transaction, which commit or abort with the output they belong to. So:

- Revoke (and lost membership). When a partition leaves this worker (Faust's revoked set at
  each rebalance), its transactional producer is stopped and its open transaction will be
  aborted by whoever starts the next producer of that id: its in-memory dedupe and identity
  state is dropped at once (:meth:`ProcessorApp._on_rebalance`), before table recovery starts,
  and read back from the changelog in full if it comes back, even before the recovery of the
  rebalance in between completed. When the consumer generation jumps by more than one, this
  member was out of the group meanwhile (its partitions may have been processed elsewhere):
  every partition it keeps is treated as revoked and its open transaction aborted.
- Generation. Each batch is tied to the generation that read it and to its partitions' lineage
  (an epoch bumped on each drop). A partition's output goes out only while the generation is
  the same and the flow is not suspended; otherwise it is discarded, not produced and not
  acked, and the batch's state changes for that partition are undone (or were already dropped
  with the partition), so the records read again are processed anew rather than taken for
  duplicates of their own discarded processing. (Drift's known fields are not undone: a
  discarded batch's schema-change records are not sent again.)
- Recovery sanity. See :meth:`ProcessorApp._check_recovery`: a changelog partition read in
  full that holds committed records, from which recovery applied none, stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from faust.types import TP, EventT, Message
from mode.utils.queues import FlowControlQueue
from prometheus_client import CollectorRegistry

from processors import faust_seam
from processors.alerts import AlertBatcher, WebhookAlerter
from processors.dedupe import DEDUPE_TABLE, Deduper
from processors.drift import DRIFT_TABLE, DriftDetector, KnownFields
from processors.faust_seam import SegflowApp
from processors.masking import Masker
from processors.metrics import ProcessorMetrics
from processors.pipeline import DUPLICATE, Outcome, Pipeline
from processors.settings import ProcessorSettings
from processors.state import ChangelogWrite, Journal
from processors.stitching import IDENTITY_TABLE, IdentityGraph
from processors.suppressions import SuppressionCheck
from runtime.health import HealthState
from runtime.kafka_config import admin_config, consumer_config, faust_broker_url
from runtime.rules import Rules
from runtime.settings import KafkaSettings
from schemas.codec import CLEAN_EVENT, IDENTITY_LINK, RAW_EVENT, SCHEMA_CHANGE, AvroCodec
from schemas.errors import FatalError, RecordError, RetryableError
from schemas.topics import (
    CALL_TYPES,
    HEADER_ERROR,
    HEADER_ERROR_CODE,
    HEADER_ORIGIN_OFFSET,
    HEADER_ORIGIN_PARTITION,
    HEADER_ORIGIN_TOPIC,
    Topics,
)

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
Send = tuple[str, bytes | None, bytes | None, Headers, int | None]

#: seconds an abort (or the stop of the aborted producer) may take after a failed hand-off
ABORT_TIMEOUT_S = 30.0
#: seconds the check of a changelog that recovery read nothing from may take
VERIFY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class TopicLayout:
    """Partition counts found on the cluster at start-up."""

    raw_partitions: int
    clean_partitions: dict[str, int]


def discover_layout(kafka: KafkaSettings, timeout_s: float = 30.0) -> TopicLayout:
    """Partition counts of the raw and clean topics; FatalError when they are missing or uneven.

    The state changelogs get the raw topics' partition count, so a partition's state, output
    and offsets share one transaction.
    """
    topics = kafka.topics
    try:
        metadata = AdminClient(admin_config(kafka, "process")).list_topics(timeout=timeout_s)
    except Exception as exc:
        raise RetryableError(f"cannot reach Kafka at {kafka.bootstrap}: {exc}") from exc
    missing = [t for t in topics.all_raw() + topics.all_clean() if t not in metadata.topics]
    missing += [
        t for t in (topics.identity, topics.schema_changes, topics.dlq) if t not in metadata.topics
    ]
    if missing:
        raise FatalError(f"topics missing: {', '.join(missing)}; run `segflow topics create`")
    counts = {t: len(metadata.topics[t].partitions) for t in topics.all_raw()}
    if len(set(counts.values())) != 1:
        raise FatalError(f"raw topics must have one partition count, found {counts}")
    clean = {t: len(metadata.topics[t].partitions) for t in topics.all_clean()}
    return TopicLayout(next(iter(counts.values())), clean)


def _headers(raw: Any) -> Headers:
    if not raw:
        return []
    items = raw.items() if hasattr(raw, "items") else raw
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]


class ProcessorApp:
    """Builds the Faust app, its tables and its agent from settings and rules."""

    def __init__(
        self,
        settings: ProcessorSettings,
        rules: Rules,
        registry: CollectorRegistry,
        layout: TopicLayout,
        health: HealthState | None = None,
        suppressions: SuppressionCheck | None = None,
    ) -> None:
        """`suppressions`: the loaded suppression list, whose users' events are dropped (None:
        every event is processed)."""
        self.settings = settings
        self.topics: Topics = settings.kafka.topics
        self.layout = layout
        self.metrics = ProcessorMetrics(registry)
        self.health = health or HealthState()
        self.codec = AvroCodec()
        self.fatal: BaseException | None = None
        self._crashing: asyncio.Future[None] | None = None
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        key = settings.pii_hmac_key.get_secret_value().encode() if settings.pii_hmac_key else None
        self.deduper = Deduper(
            settings.dedupe_lookback_s,
            settings.dedupe_max_entries_per_partition,
            settings.dedupe_max_bytes_per_partition,
        )
        self.graph = IdentityGraph(
            rules.identity,
            settings.identity_max_entries_per_partition,
            settings.identity_max_bytes_per_partition,
        )
        # lineage of each partition's live state: bumped whenever it is dropped
        self._epochs: dict[int, int] = defaultdict(int)
        self._generation: int | None = None
        self._assigned: set[int] = set()
        # partitions whose next recovery reads their changelogs in full, and what it applied
        self._full_reads: set[int] = set()
        self._applied: Counter[TP] = Counter()
        self.known = KnownFields(settings.drift_max_fields)
        self.pipeline = Pipeline(
            self.deduper,
            Masker(rules.pii, key, settings.pii_key_label),
            self.graph,
            DriftDetector(rules.tracking_plan, self.known),
            rules.tracking_plan.mode,
            suppressions,
        )
        plan = rules.tracking_plan
        url = (
            settings.alert_webhook_url.get_secret_value()
            if settings.alert_webhook_url is not None
            else plan.alert_webhook_url
        )
        interval = settings.alert_min_interval_s
        self.alerter = (
            WebhookAlerter(
                url,
                AlertBatcher(interval if interval is not None else plan.alert_min_interval_s),
                self.metrics,
                settings.alert_timeout_s,
                time.monotonic,
            )
            if url
            else None
        )
        self._lateness = {ct: self.metrics.lateness.labels(ct) for ct in CALL_TYPES}
        self.app = self._build_app()
        # fetched batches, from the consumer's fetch loop to the agent; cleared by Faust's flow
        # control on a rebalance, like the agents' own channels
        self._batches: FlowControlQueue[list[Message]] = FlowControlQueue(
            maxsize=2, flow_control=self.app.flow_control, clear_on_resume=True
        )
        self.app.batch_sink = self._batches.put
        self.app.batch_topics = frozenset(self.topics.all_raw())
        self.app.rebalance_listener = self._on_rebalance

    def _build_app(self) -> SegflowApp:
        s = self.settings
        n = self.layout.raw_partitions
        app = SegflowApp(
            s.app_id,
            broker=faust_broker_url(s.kafka),
            broker_client_id=f"{s.kafka.client_id}-process",
            broker_credentials=_credentials(s.kafka),
            store="memory://",
            processing_guarantee=s.processing_guarantee,
            broker_commit_interval=s.commit_interval_s,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
            broker_commit_every=max(10_000, s.batch_max * 4),
            topic_partitions=n,
            topic_replication_factor=s.changelog_replication,
            table_standby_replicas=0,
            web_enabled=False,
            datadir=str(s.state_dir),
            stream_buffer_maxsize=max(4096, s.batch_max * 2),
            producer_linger_ms=5,
            producer_compression_type=None if s.compression == "none" else s.compression,
            producer_max_batch_size=1_048_576,
            producer_max_request_size=4_194_304,
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=False,
        )
        self.tables = {
            name: app.Table(
                name,
                key_type=bytes,
                value_type=bytes,
                partitions=n,
                help=f"segflow {name} state (changelog for recovery)",
                on_changelog_event=self._on_changelog_event,
            )
            for name in (DEDUPE_TABLE, IDENTITY_TABLE, DRIFT_TABLE)
        }
        self.changelog_topic = {
            name: table.changelog_topic.get_topic_name() for name, table in self.tables.items()
        }
        for table in self.tables.values():
            table.on_recover(self._on_recovered)
        source = app.topic(
            *self.topics.all_raw(),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        app.agent(source, name="segflow-process")(self._agent)
        if self.alerter is not None:
            alerter = self.alerter

            @app.task
            async def start_alerter() -> None:
                alerter.start()

        return app

    # -- rebalances and recovery --------------------------------------------------------------

    def _active_partitions(self) -> set[int]:
        raw = set(self.topics.all_raw())
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in raw}

    def _changelog_tps(self, partitions: set[int]) -> set[TP]:
        return {TP(t, p) for t in self.changelog_topic.values() for p in partitions}

    def _drop_partition(self, partition: int) -> None:
        """Forget a partition's live state (it is read back from its changelog if it returns)
        and start a new lineage, so no batch read before goes out for it."""
        self._epochs[partition] += 1
        self.deduper.state.drop_partition(partition)
        self.graph.state.drop_partition(partition)
        for table in self.tables.values():
            faust_seam.forget_store_partition(table, partition)

    async def _on_rebalance(self, assigned: set[TP], revoked: set[TP], generation: int) -> set[TP]:
        """Called at each rebalance before table recovery starts (see the module doc, Lineage).

        Drops the live state of every partition that left; on a generation jump (this member
        was out of the group meanwhile) also of every partition it keeps, whose open
        transactions are aborted and whose changelogs are returned, to be read in full.
        """
        raw = frozenset(self.topics.all_raw())
        kept = {tp.partition for tp in assigned if tp.topic in raw}
        before = set(self._assigned)
        held = set(self.deduper.state.partitions()) | set(self.graph.state.partitions())
        gone = {tp.partition for tp in revoked if tp.topic in raw} | (held | before) - kept
        lost: set[int] = set()
        if self._generation is not None and generation > self._generation + 1:
            lost = kept & before
            logger.warning(
                "consumer generation went from %s to %s: this worker was out of the group, "
                "state of partitions %s is read back from the changelogs",
                self._generation,
                generation,
                sorted(lost),
            )
        if self._generation is None or generation > self._generation:
            self._generation = generation
        for partition in sorted(gone | lost):
            self._drop_partition(partition)
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
        self._full_reads = (self._full_reads & kept) | fresh
        for tp in self._changelog_tps(fresh):
            self._applied.pop(tp, None)
        self._assigned = kept
        if gone - kept:
            logger.info("dropped the state of revoked partitions %s", sorted(gone - kept))
        return self._changelog_tps(lost)

    async def _on_changelog_event(self, event: EventT) -> None:
        """Count the changelog records table recovery applies, per changelog partition."""
        self._applied[event.message.tp] += 1

    async def _on_recovered(self) -> None:
        """Move what Faust read back from the changelogs into the live state (once per table)."""
        active = self._active_partitions()
        for name, table in self.tables.items():
            by_partition = faust_seam.take_recovered(table)
            if name == DRIFT_TABLE:
                self.known.load([kv for items in by_partition.values() for kv in items])
                continue
            state = self.deduper.state if name == DEDUPE_TABLE else self.graph.state
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
        self._update_state_gauges()
        if not await self._check_recovery(active):
            return
        self.health.set_ready(True, f"processing {len(active)} partitions")
        logger.info("state recovered for partitions %s", sorted(active))

    async def _check_recovery(self, active: set[int]) -> bool:
        """False (and the worker stops) when a recovery loaded nothing from a changelog that
        holds committed records.

        The rule, for each changelog partition of each partition whose changelogs this recovery
        read from their start (newly assigned, or read again after a lost membership): if table
        recovery applied no record of it while the broker reports records between its low
        watermark and its end offset (the last stable offset), those records are read once more
        with a read_committed consumer. Under exactly-once a changelog can legitimately end in
        control records and aborted writes only, which no read_committed consumer receives; but
        if that read gets a record, recovery skipped committed state (a fetch answer lost on
        its way, as Faust's "aborted tx until highwater" shortcut can hide): starting with an
        empty state would let copies through, so the worker stops with FatalError naming the
        changelog, partition and offsets, and its restart recovers again. Partitions kept
        across a rebalance read only what was written since their last recovery and are not
        checked.
        """
        due = self._full_reads & active
        if not due:
            return True
        self._full_reads -= due
        consumer: Any = self.app.consumer
        suspects = []
        for tp in sorted(self._changelog_tps(due)):
            low, end = consumer.low_offsets.get(tp), consumer.end_offsets.get(tp)
            if low is not None and end is not None and end > low and not self._applied[tp]:
                suspects.append((tp, low, end))
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
            error = FatalError(
                f"table recovery loaded nothing from changelog {tp.topic}[{tp.partition}] "
                f"although it holds committed records (offsets {low}..{end}, first committed "
                f"at {found[tp]}); {len(found)} changelog partitions so; stopping rather than "
                "starting with an empty state (the restart recovers again)"
            )
        if error is None:
            logger.info(
                "changelog partitions %s hold no committed record", [s[0] for s in suspects]
            )
            return True
        logger.error("%s", error)
        self.health.set_ready(False, "table recovery failed")
        self._fail(error)
        return False

    def _update_state_gauges(self) -> None:
        m = self.metrics
        m.state_entries.labels(DEDUPE_TABLE).set(len(self.deduper.state))
        m.state_entries.labels(IDENTITY_TABLE).set(len(self.graph.state))
        m.state_entries.labels(DRIFT_TABLE).set(len(self.known))
        m.state_bytes.labels(DEDUPE_TABLE).set(self.deduper.state.nbytes())
        m.state_bytes.labels(IDENTITY_TABLE).set(self.graph.state.nbytes())
        for table, state in (
            (DEDUPE_TABLE, self.deduper.state),
            (IDENTITY_TABLE, self.graph.state),
        ):
            for reason, n in state.evictions.items():
                m.state_evictions.labels(table, reason).set(n)
        m.state_evictions.labels(DRIFT_TABLE, "max_entries").set(self.known.evictions)

    # -- processing ---------------------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        """Process the fetched batches; ack each message once its output is handed over.

        The agent's own stream stays empty: the consumer puts whole fetches on ``_batches``
        (the conductor's per-record path, events and channel cost more than processing did).
        A fetch smaller than ``batch_max`` waits up to ``batch_within_s`` for the next ones.
        """
        s = self.settings
        queue = self._batches
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
                if self.fatal is not None:
                    raise FatalError(f"stopping after a failed send: {self.fatal}")
                chunk = self._current(batch[start : start + s.batch_max])
                if not chunk:
                    continue
                started = time.perf_counter()
                discarded = await self.process_batch(chunk)
                # a rebalance during the hand-over: no acks, the partitions' owners read the
                # records again from the committed offsets (dedupe drops what did get out)
                ack = self.app.consumer.ack
                for message in self._current(chunk):
                    if message.partition not in discarded:
                        ack(message)
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
                self.metrics.batch_events.observe(len(chunk))

    def _current(self, messages: list[Message]) -> list[Message]:
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
        partitions whose output was discarded (a rebalance since the batch was read: see the
        module doc, Generation), whose records must not be acked."""
        now = datetime.now(UTC)
        out: dict[tuple[str, int], list[Send]] = defaultdict(list)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        tallies = _Tallies()
        ticket = _Ticket(self.app.consumer_generation_id, Journal())
        for msg in messages:
            ticket.records[msg.partition] = ticket.records.get(msg.partition, 0) + 1
        ticket.epochs = {p: self._epochs[p] for p in ticket.records}
        # journal the batch's state changes until its hand-off starts (nothing else changes
        # the state meanwhile: no await in between)
        self.deduper.state.journal = self.graph.state.journal = ticket.journal
        try:
            self._process_all(messages, now, out, counts, tallies)
        finally:
            self.deduper.state.journal = self.graph.state.journal = None
        self._flush_metrics(counts, tallies)
        # the state above already holds the batch's dedupe and identity entries: the hand-off
        # must not stop half-way (a stop cancels the agent, then commits the open transactions)
        await finish_despite_cancel(self._send_all(out, ticket))
        self._update_state_gauges()
        return ticket.discarded

    def _process_all(
        self,
        messages: Sequence[Message],
        now: datetime,
        out: dict[tuple[str, int], list[Send]],
        counts: dict[tuple[str, str], int],
        tallies: _Tallies,
    ) -> None:
        decode = self.codec.decode
        process = self.pipeline.process
        for msg in messages:
            sends = out[(msg.topic, msg.partition)]
            writes: list[ChangelogWrite] = []
            try:
                raw = decode(RAW_EVENT, msg.value, micros=True)
                outcome = process(raw, msg.key, msg.partition, now, writes)
            except RecordError as exc:
                exc.at(msg.topic, msg.partition, msg.offset)
                sends.append(self._dlq(msg, exc.reason, exc.code))
                counts[(self.topics.call_type_of(msg.topic), "dlq")] += 1
                self.metrics.dlq.labels(exc.code).inc()
                logger.warning("record to DLQ: %s", exc)
                continue
            except Exception as exc:  # a bug must not stop the partition: DLQ with the reason
                reason = f"processing failed: {type(exc).__name__}: {exc}"
                sends.append(self._dlq(msg, reason, "processing_failed"))
                counts[(self.topics.call_type_of(msg.topic), "dlq")] += 1
                self.metrics.dlq.labels("processing_failed").inc()
                logger.exception(
                    "processing failed at %s[%s]@%s", msg.topic, msg.partition, msg.offset
                )
                continue
            self._collect(outcome, msg, sends, writes, counts, tallies)

    def _collect(
        self,
        outcome: Outcome,
        msg: Message,
        sends: list[Send],
        writes: list[ChangelogWrite],
        counts: dict[tuple[str, str], int],
        tallies: _Tallies,
    ) -> None:
        call_type = outcome.call_type
        if outcome.dropped is not None:
            counts[(call_type, outcome.dropped)] += 1
            if outcome.dropped == DUPLICATE:
                self._lateness[call_type].observe(outcome.lateness_s)
            return
        self._lateness[call_type].observe(outcome.lateness_s)
        counts[(call_type, "clean")] += 1
        clean_topic = self.topics.clean(call_type)
        same = self.layout.clean_partitions.get(clean_topic) == self.layout.raw_partitions
        sends.append(
            (
                clean_topic,
                msg.key,
                self.codec.encode(CLEAN_EVENT, outcome.clean),  # type: ignore[arg-type]
                _headers(msg.headers),
                msg.partition if same else None,
            )
        )
        masked = tallies.masked
        for entry in outcome.masked:
            action = entry[entry.rindex(":") + 1 :]
            masked[action] = masked.get(action, 0) + 1
        for link in outcome.links:
            kind = link["identifierType"]
            tallies.links[kind] = tallies.links.get(kind, 0) + 1
            sends.append(
                (
                    self.topics.identity,
                    link["identifier"].encode(),
                    self.codec.encode(IDENTITY_LINK, link),
                    [],
                    None,
                )
            )
        if outcome.refused:
            tallies.refused[outcome.refused] = tallies.refused.get(outcome.refused, 0) + 1
        for change in outcome.changes:
            self.metrics.schema_changes.labels(change["change"]).inc()
            key = f"{change['source']}.{change['callType']}.{change['event'] or ''}"
            sends.append(
                (
                    self.topics.schema_changes,
                    f"{key}.{change['field']}".encode(),
                    self.codec.encode(SCHEMA_CHANGE, change),
                    [],
                    None,
                )
            )
            if self.alerter is not None:
                self.alerter.add(change)
        changelog = self.changelog_topic
        for w in writes:
            sends.append((changelog[w.table], w.key, w.value, [], w.partition))

    def _flush_metrics(self, counts: dict[tuple[str, str], int], tallies: _Tallies) -> None:
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

    def _dlq(self, msg: Message, reason: str, code: str) -> Send:
        headers = [
            *_headers(msg.headers),
            (HEADER_ERROR, reason[:1000].encode()),
            (HEADER_ERROR_CODE, code.encode()),
            (HEADER_ORIGIN_TOPIC, msg.topic.encode()),
            (HEADER_ORIGIN_PARTITION, str(msg.partition).encode()),
            (HEADER_ORIGIN_OFFSET, str(msg.offset).encode()),
        ]
        return (self.topics.dlq, msg.key, msg.value, headers, None)

    async def _send_all(self, out: dict[tuple[str, int], list[Send]], ticket: _Ticket) -> None:
        """Hand every partition's records to Kafka, or discard them; a failure stops the worker.

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
                for topic, sends in items:
                    if not await self._send(topic, partition, sends, ticket, started):
                        self._discard(partition, ticket)
                        break
                    started = True
        except Exception as exc:
            self._fail(exc)
            raise

    def _may_send(self, partition: int, ticket: _Ticket, started: bool) -> bool:
        """Whether a partition's output of the batch `ticket` stands for may go out now: its
        lineage unchanged, and (before its first record went out) the generation that read it
        still current with the flow not suspended by a rebalance."""
        if self._epochs[partition] != ticket.epochs[partition]:
            return False
        if started:  # its first records went into this lineage's transaction: finish it
            return True
        app = self.app
        return app.consumer_generation_id == ticket.generation and app.flow_control.is_active()

    def _discard(self, partition: int, ticket: _Ticket) -> None:
        """Leave a partition's output of the batch out: undo the batch's state changes for it
        (unless its state was dropped meanwhile) and count its records as stale."""
        if partition in ticket.discarded:
            return
        ticket.discarded.add(partition)
        if self._epochs[partition] == ticket.epochs[partition]:
            self.deduper.state.rollback(partition, ticket.journal)
            self.graph.state.rollback(partition, ticket.journal)
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
        self, source_topic: str, partition: int, sends: list[Send], ticket: _Ticket, started: bool
    ) -> bool:
        """Hand one source partition's records over; False when they must be discarded."""
        app = self.app
        if not self.exactly_once:
            if not self._may_send(partition, ticket, started):
                return False
            if sends:
                await self._hand_over(faust_seam.plain_producer(app), sends)
            return True
        group = app.assignor.group_for_topic(source_topic)
        tid = f"{app.conf.id}-{group}-{partition}"
        txp = faust_seam.transaction_producer(app, tid)
        if txp is None:
            if not self._may_send(partition, ticket, started) or (
                TP(source_topic, partition) not in app.consumer.assignment()
            ):
                # revoked while this batch was processed: its new owner processes it again
                # from the committed offset; writing it here (outside any transaction) would
                # duplicate
                return False
            # Faust dropped the producer: producer fenced. Stop rather than write outside the
            # transaction; the restart resumes from the committed offsets.
            raise FatalError(f"no transactional producer {tid} for {source_topic}[{partition}]")
        async with faust_seam.transaction_lock(app, tid):
            if not self._may_send(partition, ticket, started):
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
                fut.add_done_callback(self._on_delivered)
                continue
            batch = batches.get((topic, part))
            if batch is None:
                batch = batches[(topic, part)] = aioproducer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                fut = await aioproducer.send_batch(batch, topic, partition=part)
                fut.add_done_callback(self._on_delivered)
                batch = batches[(topic, part)] = aioproducer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise FatalError(f"a record for {topic} is larger than a producer batch")
        for (topic, part), batch in batches.items():
            if batch.record_count():
                fut = await aioproducer.send_batch(batch, topic, partition=part)
                fut.add_done_callback(self._on_delivered)

    def _on_delivered(self, fut: Any) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Mark the worker failed and crash the app: it stops (committing the transactions
        that are whole) and exits non-zero, rather than going on with state ahead of Kafka."""
        if self.fatal is not None:
            return
        self.fatal = exc
        logger.error("a send failed, the worker will stop: %s", type(exc).__name__)
        self._crashing = asyncio.ensure_future(self.app.crash(exc))


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
            task.exception()  # a failure was handled by the task itself (see _send_all)
        raise asyncio.CancelledError
    task.result()


@dataclass(slots=True)
class _Ticket:
    """What a batch's output is tied to: the consumer generation that read it, the lineage
    (epoch) of each of its partitions, and the journal of its state changes."""

    generation: int
    journal: Journal
    epochs: dict[int, int] = field(default_factory=dict)
    records: dict[int, int] = field(default_factory=dict)
    discarded: set[int] = field(default_factory=set)


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


@dataclass(slots=True)
class _Tallies:
    """Per-batch counts, added to the metrics once per batch rather than once per event."""

    masked: dict[str, int] = field(default_factory=dict)
    links: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)


def _credentials(kafka: KafkaSettings) -> Any:
    """Faust credentials for SASL/SSL settings; None for PLAINTEXT."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    import ssl

    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None
        )
    if kafka.security_protocol.startswith("SASL"):
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        return faust.SASLCredentials(
            username=kafka.sasl_username or "",
            password=password,
            mechanism=kafka.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context)
