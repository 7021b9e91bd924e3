"""The sink's Kafka loop (confluent-kafka): thin, the decisions live in batcher/rows/loader.

- read_committed consumer of segment.events.* and segment.identity, cooperative rebalancing;
- on assignment each partition starts at the offset stored in the warehouse (not Kafka's);
- records become rows (rows.py) in per-partition buffers (batcher.py); when a buffer is full or
  old, every buffer that moved is flushed as one warehouse transaction (loader.py);
- after the warehouse committed, the offsets are committed to Kafka too, as advice only;
- a retryable warehouse error pauses consumption, backs off and retries the same batch; a
  fenced flush (another instance moved the offsets) drops the batch and re-seeks;
- undecodable records go to the DLQ with their origin, and their partition moves on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from runtime.health import HealthState
from runtime.kafka_config import consumer_config, producer_config
from runtime.rules import Rules
from schemas.codec import CLEAN_EVENT, IDENTITY_LINK, AvroCodec
from schemas.errors import FatalError, RecordError, RetryableError
from schemas.topics import (
    HEADER_ERROR,
    HEADER_ERROR_CODE,
    HEADER_ORIGIN_OFFSET,
    HEADER_ORIGIN_PARTITION,
    HEADER_ORIGIN_TOPIC,
)
from sinks.snowflake.batcher import Batcher, FlushBatch
from sinks.snowflake.errors import FencedError
from sinks.snowflake.loader import SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.rows import Origin, TableRow, event_rows, identity_row, schema_name
from sinks.snowflake.settings import SinkSettings

logger = logging.getLogger(__name__)

# Estimated in-memory bytes per byte of Avro: decoded rows (dicts of Python objects, the
# per-event copy, the audit document) take this many times the record's size.
MEMORY_PER_AVRO_BYTE = 12
TP = tuple[str, int]


class Suppressions(Protocol):
    def is_suppressed(self, user_id: object = None, anonymous_id: object = None) -> bool: ...


class SinkConsumer:
    """Consumes clean events and identity links and loads them exactly once."""

    def __init__(
        self,
        settings: SinkSettings,
        rules: Rules,
        loader: SnowflakeLoader,
        metrics: SinkMetrics,
        *,
        suppressions: Suppressions | None = None,
        health: HealthState | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.loader = loader
        self.metrics = metrics
        self.suppressions = suppressions
        self.health = health or HealthState()
        self.clock = clock
        topics = settings.kafka.topics
        self.identity_topic = topics.identity
        self.dlq_topic = topics.dlq
        self.topics = [*topics.all_clean(), topics.identity]
        self.codec = AvroCodec()
        self.batcher = Batcher(
            settings.flush_rows,
            settings.flush_bytes,
            settings.flush_age_s,
            settings.max_buffered_bytes,
        )
        self._audit = {s.name: s.audit for s in rules.sources}
        self._stop = threading.Event()
        self._assigned: set[TP] = set()  # assigned to the consumer (fetching)
        self._skip: set[TP] = set()  # re-sought during this consume() batch
        self._lost: set[TP] = set()  # revoked while a flush was retrying
        self._dlq_pending = 0
        self._last_lag = 0.0
        self.consumer: Any = None
        self.producer: Any = None

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; a final flush loads what is buffered."""
        self._stop = stop
        extra: dict[str, Any] = {
            "queued.max.messages.kbytes": self.settings.fetch_queue_kbytes,
            "enable.partition.eof": False,
            "session.timeout.ms": self.settings.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.settings.session_timeout_ms // 10),
        }
        if self.settings.instance_id:
            extra["group.instance.id"] = self.settings.instance_id
        conf = consumer_config(self.settings.kafka, "sink", self.settings.group_id, **extra)
        self.consumer = Consumer(conf)
        self.producer = Producer(producer_config(self.settings.kafka, "sink-dlq"))
        self.loader.connect()
        self.consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.health.set_ready(True, "consuming")
        try:
            while not stop.is_set():
                self._step()
            self._flush(final=True)
        finally:
            self.health.set_ready(False, "stopping")
            try:
                self.consumer.close()
            finally:
                self.producer.flush(10)
                self.loader.close()

    def _step(self) -> None:
        messages = self.consumer.consume(self.settings.consume_batch, 0.2)
        self._skip.clear()
        now = self.clock()
        for msg in messages:
            self._handle(msg, now)
        now = self.clock()
        if self.batcher.ready(now):
            self._flush()
        self.metrics.buffered_bytes.set(self.batcher.total_bytes)
        self.metrics.buffered_records.set(self.batcher.total_records)
        if now - self._last_lag >= self.settings.lag_interval_s:
            self._last_lag = now
            self._update_lag()

    # -- rebalancing -------------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        logger.info("assigned %d partitions", len(tps))
        self._lost.difference_update(tps)
        self._start(tps)

    def _start(self, tps: list[TP]) -> None:
        """Start fetching partitions at the offsets the warehouse holds for them.

        While the warehouse cannot be read this waits (backing off): starting anywhere else
        could load a record twice or skip one."""
        stored = self._read_offsets(tps, create=True)
        if stored is None:  # stopping: take the partitions without buffering them
            self.consumer.incremental_assign([TopicPartition(t, p) for t, p in tps])
            self._assigned.update(tps)
            return
        start = []
        for (topic, partition), offset in stored.items():
            self.batcher.assign(topic, partition, offset)
            start.append(
                TopicPartition(topic, partition, offset)
                if offset >= 0
                else TopicPartition(topic, partition)
            )
        self.consumer.incremental_assign(start)
        self._assigned.update(stored)

    def _read_offsets(self, tps: list[TP], create: bool) -> dict[TP, int] | None:
        delay = self.settings.retry_initial_s
        while True:
            try:
                if create:
                    return self.loader.ensure_offsets(tps)
                return self.loader.read_offsets(tps)
            except RetryableError as exc:
                self.metrics.retries.inc()
                logger.warning("cannot read the offsets of %d partitions: %s", len(tps), exc)
                self.health.set_ready(False, "warehouse unavailable")
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, self.settings.retry_max_s)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._release(partitions, "revoked")

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._release(partitions, "lost")

    def _release(self, partitions: list[TopicPartition], why: str) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        logger.info("%s %d partitions; their buffers are dropped", why, len(tps))
        assigned = [TopicPartition(t, p) for t, p in tps if (t, p) in self._assigned]
        for topic, partition in tps:
            self.batcher.drop(topic, partition)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(topic, str(partition))
        self._assigned.difference_update(tps)
        self._lost.update(tps)
        if assigned:
            self.consumer.incremental_unassign(assigned)

    # -- records -----------------------------------------------------------------------------
    def _handle(self, msg: Message, now: float) -> None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise FatalError(f"Kafka consumer failed: {err.str()}")
            logger.warning("consumer error: %s", err.str())
            return
        topic, partition = str(msg.topic()), int(msg.partition() or 0)
        offset = int(msg.offset() or 0)
        if (topic, partition) in self._skip or not self.batcher.owns(topic, partition):
            return
        value = msg.value()
        rows: list[TableRow] = []
        outcome = "buffered"
        origin = Origin(topic, partition, offset)
        try:
            if value is None:
                outcome = "tombstone"
            elif topic == self.identity_topic:
                link = self.codec.decode(IDENTITY_LINK, value)
                if self._suppressed(link.get("canonicalUserId"), link.get("identifier")):
                    outcome = "suppressed"
                else:
                    rows = [identity_row(link, origin)]
            else:
                record = self.codec.decode(CLEAN_EVENT, value)
                if self._suppressed(
                    record.get("userId") or record.get("canonicalUserId"),
                    record.get("anonymousId"),
                ) or (
                    record.get("canonicalUserId")
                    and self._suppressed(record.get("canonicalUserId"), None)
                ):
                    outcome = "suppressed"
                else:
                    rows = event_rows(record, origin, audit=self._audit_of(record))
        except RecordError as exc:
            self._to_dlq(msg, exc.at(topic, partition, offset))
            outcome = "dlq"
        except (KeyError, TypeError, ValueError) as exc:
            self._to_dlq(
                msg, RecordError(f"{type(exc).__name__}: {exc}").at(topic, partition, offset)
            )
            outcome = "dlq"
        size = len(value) * MEMORY_PER_AVRO_BYTE if value else 64
        if self.batcher.add(topic, partition, offset, rows, size, now):
            self.metrics.records.labels(topic, outcome).inc()

    def _suppressed(self, user_id: object, anonymous_id: object) -> bool:
        return self.suppressions is not None and self.suppressions.is_suppressed(
            user_id, anonymous_id
        )

    def _audit_of(self, record: dict[str, Any]) -> bool:
        source = record.get("source") or ""
        audit = self._audit.get(source)
        if audit is None:
            audit = self._audit.get(schema_name(source))
        return self.settings.audit_default if audit is None else audit

    def _to_dlq(self, msg: Message, exc: RecordError) -> None:
        logger.warning("record to the DLQ: %s", exc)
        headers = [
            (HEADER_ERROR, exc.reason.encode()),
            (HEADER_ERROR_CODE, exc.code.encode()),
            (HEADER_ORIGIN_TOPIC, str(msg.topic()).encode()),
            (HEADER_ORIGIN_PARTITION, str(msg.partition()).encode()),
            (HEADER_ORIGIN_OFFSET, str(msg.offset()).encode()),
        ]
        self.producer.produce(self.dlq_topic, value=msg.value(), key=msg.key(), headers=headers)
        self.producer.poll(0)
        self._dlq_pending += 1

    # -- flushing ----------------------------------------------------------------------------
    def _flush(self, final: bool = False) -> None:
        batch = self.batcher.take()
        if batch is None:
            return
        if self._dlq_pending:
            if self.producer.flush(30) > 0:
                raise FatalError("DLQ records not acknowledged by Kafka; not committing offsets")
            self._dlq_pending = 0
        self._lost.clear()
        delay = self.settings.retry_initial_s
        attempts = 0
        paused: list[TopicPartition] = []
        try:
            while True:
                batch = batch.without(self._lost)
                if not batch.slices:
                    return
                try:
                    result = self.loader.flush(batch)
                    break
                except FencedError:
                    self.metrics.fenced.inc()
                    self.metrics.flushes.labels("fenced").inc()
                    logger.warning(
                        "flush of %d records fenced: another instance moved the offsets; "
                        "the batch is dropped and its partitions re-read",
                        batch.records,
                    )
                    self._reseek(batch)
                    return
                except RetryableError as exc:
                    attempts += 1
                    self.metrics.retries.inc()
                    self.metrics.flushes.labels("retried").inc()
                    limit = self.settings.retry_max_attempts
                    if (final and attempts >= 3) or (limit and attempts > limit):
                        raise FatalError(
                            f"flush failed after {attempts} attempts, nothing committed: {exc}"
                        ) from exc
                    logger.warning(
                        "flush of %d records failed, retry %d in %.1f s: %s",
                        batch.records,
                        attempts,
                        delay,
                        exc,
                    )
                    self.health.set_ready(False, "warehouse unavailable")
                    if not paused and not final:
                        paused = self.consumer.assignment()
                        self.consumer.pause(paused)
                    self._wait(delay, final)
                    delay = min(delay * 2, self.settings.retry_max_s)
        finally:
            if paused:
                still = [tp for tp in paused if (tp.topic, tp.partition) in self._assigned]
                if still:
                    self.consumer.resume(still)
        self.health.set_ready(True, "consuming")
        self.metrics.flushes.labels("committed").inc()
        self.metrics.flush_seconds.observe(result.seconds)
        self.metrics.flush_records.observe(batch.records)
        self.metrics.flush_bytes.observe(batch.bytes)
        self.metrics.flush_statements.observe(result.statements)
        logger.info(
            "flushed %d records from %d partitions in %.2f s, %d statements",
            batch.records,
            len(batch.slices),
            result.seconds,
            result.statements,
        )
        self._commit_advice(batch)

    def _wait(self, seconds: float, final: bool) -> None:
        """Back off while serving the group (rebalance callbacks) and buffering what arrives."""
        deadline = self.clock() + seconds
        while True:
            left = deadline - self.clock()
            if left <= 0:
                return
            if final:
                time.sleep(min(left, 0.5))
                continue
            for msg in self.consumer.consume(self.settings.consume_batch, min(left, 0.5)):
                self._handle(msg, self.clock())

    def _reseek(self, batch: FlushBatch) -> None:
        """After fencing: forget the partitions' buffers and restart them where the warehouse
        says (the other writer's offsets)."""
        tps = [
            (s.topic, s.partition) for s in batch.slices if (s.topic, s.partition) in self._assigned
        ]
        if not tps:
            return
        self.consumer.incremental_unassign([TopicPartition(t, p) for t, p in tps])
        for topic, partition in tps:
            self.batcher.drop(topic, partition)
            self._skip.add((topic, partition))
        self._assigned.difference_update(tps)
        self._start(tps)

    def _commit_advice(self, batch: FlushBatch) -> None:
        offsets = [
            TopicPartition(s.topic, s.partition, s.new)
            for s in batch.slices
            if (s.topic, s.partition) in self._assigned
        ]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:  # advice only: the warehouse holds the truth
            logger.info("Kafka offset commit (advice) failed: %s", exc)

    def _update_lag(self) -> None:
        for topic, partition in list(self._assigned):
            position = self.batcher.position(topic, partition)
            try:
                _low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                continue
            if position is None or high < 0:
                continue
            self.metrics.lag.labels(topic, str(partition)).set(max(0, high - position))
