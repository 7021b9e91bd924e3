"""The Faust app: one agent over every raw topic, state in changelogged tables, one transaction
per partition.

The agent is thin: it takes batches of records (``stream.take_events``), decodes them, runs the
pure :class:`~processors.pipeline.Pipeline` and hands what comes back to Kafka.

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
dropped, so nothing is duplicated either way.

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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
from confluent_kafka.admin import AdminClient
from faust.types import TP, EventT
from prometheus_client import CollectorRegistry

from processors.alerts import AlertBatcher, WebhookAlerter
from processors.dedupe import DEDUPE_TABLE, Deduper
from processors.drift import DRIFT_TABLE, DriftDetector, KnownFields
from processors.masking import Masker
from processors.metrics import ProcessorMetrics
from processors.pipeline import Outcome, Pipeline
from processors.settings import ProcessorSettings
from processors.state import ChangelogWrite
from processors.stitching import IDENTITY_TABLE, IdentityGraph
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
    ) -> None:
        self.settings = settings
        self.topics: Topics = settings.kafka.topics
        self.layout = layout
        self.metrics = ProcessorMetrics(registry)
        self.health = health or HealthState()
        self.codec = AvroCodec()
        self.fatal: BaseException | None = None
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        key = settings.pii_hmac_key.get_secret_value().encode() if settings.pii_hmac_key else None
        self.deduper = Deduper(
            settings.dedupe_lookback_s, settings.dedupe_max_entries_per_partition
        )
        self.graph = IdentityGraph(rules.identity, settings.identity_max_entries_per_partition)
        self.known = KnownFields(settings.drift_max_fields)
        self.pipeline = Pipeline(
            self.deduper,
            Masker(rules.pii, key, settings.pii_key_version),
            self.graph,
            DriftDetector(rules.tracking_plan, self.known),
            rules.tracking_plan.mode,
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
        self._masked: dict[str, Any] = {}
        self.app = self._build_app()

    def _build_app(self) -> faust.App:
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
        """Drain the agent's channel in batches and ack each event once it is handed over.

        Iterating the Faust stream (or ``stream.take``) costs several awaits and context
        switches per event and starved the loop; the conductor already decodes each record into
        an event on the channel's queue, so the agent takes what is queued (up to ``batch_max``,
        waiting at most ``batch_within_s`` for a batch to fill) and acks through the events,
        which is what Faust's offset commits follow.
        """
        s = self.settings
        queue = stream.channel.queue
        loop = asyncio.get_running_loop()
        while True:
            try:
                events = [await queue.get()]
            except StopAsyncIteration:  # Faust's way of stopping an actor
                return
            deadline = loop.time() + s.batch_within_s
            while len(events) < s.batch_max:
                while len(events) < s.batch_max and not queue.empty():
                    events.append(queue.get_nowait())
                if len(events) >= s.batch_max or loop.time() >= deadline:
                    break
                await asyncio.sleep(0.002)
            if self.fatal is not None:
                raise FatalError(f"stopping after a failed send: {self.fatal}")
            started = time.perf_counter()
            await self.process_batch(events)
            for event in events:
                event.ack()
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_events.observe(len(events))

    async def process_batch(self, events: Sequence[EventT]) -> None:
        """Process a batch and hand its records to Kafka, per source partition."""
        now = datetime.now(UTC)
        out: dict[
            tuple[str, int], list[tuple[str, bytes | None, bytes | None, Headers, int | None]]
        ]
        out = defaultdict(list)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for event in events:
            msg = event.message
            sends = out[(msg.topic, msg.partition)]
            writes: list[ChangelogWrite] = []
            try:
                raw = self.codec.decode(RAW_EVENT, event.value)
                outcome = self.pipeline.process(raw, msg.key, msg.partition, now, writes)
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
            self._collect(outcome, msg, sends, writes, counts)
        for (call_type, outcome_name), n in counts.items():
            self.metrics.events.labels(call_type, outcome_name).inc(n)
        for (topic, partition), sends in out.items():
            await self._send(topic, partition, sends)
        self._update_state_gauges()

    def _collect(
        self,
        outcome: Outcome,
        msg: Any,
        sends: list[tuple[str, bytes | None, bytes | None, Headers, int | None]],
        writes: list[ChangelogWrite],
        counts: dict[tuple[str, str], int],
    ) -> None:
        m = self.metrics
        call_type = outcome.call_type
        self._lateness[call_type].observe(outcome.lateness_s)
        if outcome.clean is None:
            counts[(call_type, "duplicate")] += 1
            m.duplicates.labels(call_type).inc()
            return
        counts[(call_type, "clean")] += 1
        clean_topic = self.topics.clean(call_type)
        same = self.layout.clean_partitions.get(clean_topic) == self.layout.raw_partitions
        sends.append(
            (
                clean_topic,
                msg.key,
                self.codec.encode(CLEAN_EVENT, outcome.clean),
                _headers(msg.headers),
                msg.partition if same else None,
            )
        )
        for entry in outcome.masked:
            action = entry.rsplit(":", 1)[1]
            child = self._masked.get(action)
            if child is None:
                child = self._masked[action] = m.masked_fields.labels(action)
            child.inc()
        for link in outcome.links:
            m.identity_links.labels(link["identifierType"]).inc()
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
            m.identity_refused.labels(outcome.refused).inc()
        for change in outcome.changes:
            m.schema_changes.labels(change["change"]).inc()
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
        for w in writes:
            sends.append((self.changelog_topic[w.table], w.key, w.value, [], w.partition))

    def _dlq(
        self, msg: Any, reason: str, code: str
    ) -> tuple[str, bytes | None, bytes | None, Headers, int | None]:
        headers = [
            *_headers(msg.headers),
            (HEADER_ERROR, reason[:1000].encode()),
            (HEADER_ERROR_CODE, code.encode()),
            (HEADER_ORIGIN_TOPIC, msg.topic.encode()),
            (HEADER_ORIGIN_PARTITION, str(msg.partition).encode()),
            (HEADER_ORIGIN_OFFSET, str(msg.offset).encode()),
        ]
        return (self.topics.dlq, msg.key, msg.value, headers, None)

    async def _send(
        self,
        source_topic: str,
        partition: int,
        sends: list[tuple[str, bytes | None, bytes | None, Headers, int | None]],
    ) -> None:
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
            await self._hand_over(txp, sends)

    async def _hand_over(
        self,
        aioproducer: Any,
        sends: list[tuple[str, bytes | None, bytes | None, Headers, int | None]],
    ) -> None:
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
        if exc is not None and self.fatal is None:
            self.fatal = exc
            logger.error("a send failed, the worker will stop: %s", type(exc).__name__)


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
