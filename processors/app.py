"""The Faust app: one agent over every raw topic, state in changelogged tables, one transaction
per partition.

The agent is thin: it takes the batches of messages the consumer fetched
(:class:`~processors.transport.LeanConsumer` hands each fetch over as one list), decodes them,
runs the pure :class:`~processors.pipeline.Pipeline` and hands what comes back to Kafka. A batch
fetched before a rebalance (another consumer generation, or the flow suspended) is dropped
unprocessed and unacked: its partitions are read again from the committed offsets.

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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from confluent_kafka.admin import AdminClient
from faust.types import TP, Message
from mode.utils.queues import FlowControlQueue
from prometheus_client import CollectorRegistry

from processors.alerts import AlertBatcher, WebhookAlerter
from processors.dedupe import DEDUPE_TABLE, Deduper
from processors.drift import DRIFT_TABLE, DriftDetector, KnownFields
from processors.masking import Masker
from processors.metrics import ProcessorMetrics
from processors.pipeline import DUPLICATE, Outcome, Pipeline
from processors.settings import ProcessorSettings
from processors.state import ChangelogWrite
from processors.stitching import IDENTITY_TABLE, IdentityGraph
from processors.suppressions import SuppressionCheck
from processors.transport import SegflowApp
from runtime.health import HealthState
from runtime.kafka_config import admin_config, faust_broker_url
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
            settings.dedupe_lookback_s, settings.dedupe_max_entries_per_partition
        )
        self.graph = IdentityGraph(rules.identity, settings.identity_max_entries_per_partition)
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

    # -- recovery -----------------------------------------------------------------------------

    def _active_partitions(self) -> set[int]:
        raw = set(self.topics.all_raw())
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in raw}

    async def _on_recovered(self) -> None:
        """Move what Faust read back from the changelogs into the live state (once per table)."""
        active = self._active_partitions()
        for name, table in self.tables.items():
            store = table.data
            data: dict[Any, Any] = getattr(store, "data", {})
            key_partition: dict[Any, int] = getattr(store, "_key_partition", {})
            if name == DRIFT_TABLE:
                self.known.load(list(data.items()))
            else:
                state = self.deduper.state if name == DEDUPE_TABLE else self.graph.state
                for held in state.partitions():
                    if held not in active:
                        state.drop_partition(held)
                by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
                for key, value in data.items():
                    part = key_partition.get(key)
                    if part is not None and value:
                        by_partition[part].append((key, value))
                for p, items in by_partition.items():
                    if p not in active:
                        continue
                    if p in state.partitions():
                        for key, value in items:
                            state.load_one(p, key, value)
                    else:
                        state.load(p, items)
                    self.metrics.recovered_entries.labels(name).inc(len(items))
            data.clear()
            key_partition.clear()
        self._update_state_gauges()
        self.health.set_ready(True, f"processing {len(active)} partitions")
        logger.info("state recovered for partitions %s", sorted(active))

    def _update_state_gauges(self) -> None:
        m = self.metrics
        m.state_entries.labels(DEDUPE_TABLE).set(len(self.deduper.state))
        m.state_entries.labels(IDENTITY_TABLE).set(len(self.graph.state))
        m.state_entries.labels(DRIFT_TABLE).set(len(self.known))
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
                await self.process_batch(chunk)
                # a rebalance during the hand-over: no acks, the partitions' owners read the
                # records again from the committed offsets (dedupe drops what did get out)
                ack = self.app.consumer.ack
                for message in self._current(chunk):
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

    async def process_batch(self, messages: Sequence[Message]) -> None:
        """Process a batch and hand its records to Kafka, per source partition."""
        now = datetime.now(UTC)
        out: dict[tuple[str, int], list[Send]] = defaultdict(list)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        tallies = _Tallies()
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
        self._flush_metrics(counts, tallies)
        # the state above already holds the batch's dedupe and identity entries: the hand-off
        # must not stop half-way (a stop cancels the agent, then commits the open transactions)
        await finish_despite_cancel(self._send_all(out))
        self._update_state_gauges()

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

    async def _send_all(self, out: dict[tuple[str, int], list[Send]]) -> None:
        """Hand every partition's records to Kafka; a failure stops the worker.

        After a failure the live state may hold entries whose records never went out, so the
        agent must not simply be restarted (what Faust does with an agent that raised): the app
        crashes and the next start rebuilds the state from the committed changelogs.
        """
        try:
            for (topic, partition), sends in out.items():
                await self._send(topic, partition, sends)
        except Exception as exc:
            self._fail(exc)
            raise

    async def _send(self, source_topic: str, partition: int, sends: list[Send]) -> None:
        if not sends:
            return
        producer: Any = self.app.producer
        if not self.exactly_once:
            await self._hand_over(producer._ensure_producer(), sends)
            return
        group = self.app.assignor.group_for_topic(source_topic)
        tid = f"{self.app.conf.id}-{group}-{partition}"
        txp = producer._transaction_producers.get(tid)
        if txp is None and TP(source_topic, partition) not in self.app.consumer.assignment():
            # revoked while this batch was processed: its new owner processes it again from
            # the committed offset; writing it here (outside any transaction) would duplicate
            logger.info("dropping output of revoked %s[%s]", source_topic, partition)
            return
        if txp is None:
            # Faust dropped the producer: partition revoked or producer fenced. Stop rather than
            # write outside the transaction; the restart resumes from the committed offsets.
            raise FatalError(f"no transactional producer {tid} for {source_topic}[{partition}]")
        async with producer._trn_locks[tid]:
            try:
                await self._hand_over(txp, sends)
            except Exception:
                await self._abandon_transaction(producer, tid, txp)
                raise

    async def _abandon_transaction(self, producer: Any, tid: str, txp: Any) -> None:
        """Abort a partition's transaction after a failed hand-off, and drop its producer.

        Nothing of that transaction may commit: what was handed before the failure (e.g. clean
        events without their dedupe entries) nor the offsets of the batches acked before it,
        whose output the abort discards. Faust commits only the transactional ids it holds a
        producer for (the stop's final commit included), so the producer goes first; if the
        abort itself fails, the next owner's producer aborts the transaction when it starts.
        Called with the transaction's lock held.
        """
        producer._transaction_producers.pop(tid, None)
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
