"""The sink's Kafka loop (confluent-kafka): thin, the decisions live in the modules it drives.

- read_committed consumer of segment.events.*, segment.identity and segment.schema-changes (the
  processors' findings, loaded beside the sink's own); by default `assignment_strategy`
  roundrobin (an eager protocol) splits every topic evenly across the instances, so several
  sinks share the busy topic; cooperative-sticky moves fewer partitions at a rebalance but
  evens only their count over all topics (see `Assignments`);
- on assignment each partition starts at the offset stored in the warehouse (not Kafka's);
  where each partition stands is one object per partition with named transitions (progress.py);
- records become rows in per-partition buffers (intake.py, rows.py, batcher.py); undecodable
  records go to the DLQ with their origin, and their partition moves on (deadletters.py);
- when a buffer is full or old, every buffer that moved is flushed as one warehouse transaction,
  in a worker thread while the next records are consumed, the next flush prepared ahead
  (flushing.py); records the warehouse refuses for their data are set apart (isolation.py);
- after the warehouse committed, the offsets are committed to Kafka too, as advice only;
- revoked partitions are flushed before they are released (a stop or a rebalance does not throw
  away what was read); lost ones are dropped; fenced ones are re-read from the warehouse offsets.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from runtime.health import HealthState
from runtime.kafka_config import consumer_config, producer_config
from runtime.rules import Rules
from schemas.errors import RetryableError
from schemas.topics import PartitionKey
from sinks.snowflake.batcher import Batcher
from sinks.snowflake.deadletters import DeadLetters
from sinks.snowflake.flushing import Flusher, FlushMode
from sinks.snowflake.intake import RecordIntake, Suppressions
from sinks.snowflake.loader import SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.progress import PartitionState, Progress
from sinks.snowflake.settings import SinkSettings

__all__ = ["SinkConsumer", "Suppressions"]

logger = logging.getLogger(__name__)

# Young-generation threshold of the cyclic garbage collector while the sink runs. The buffers
# hold hundreds of thousands of dicts that never form cycles; at the default (700) the collector
# runs every few hundred decoded records and took a large share of row building (figures:
# bench/results/sink-tuning.md). Older generations keep their defaults, so cycles are still
# collected.
GC_YOUNG_THRESHOLD = 50_000
# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms). The
# flush worker's warehouse calls (the connector's HTTP round trips, the PUT's file transfer) wait
# for the GIL after every reply while this thread decodes records or prepares the next flush;
# at 5 ms a PUT took several times longer and the steady state was slower; 0.2 ms was no better
# than 0.5 ms (figures: bench/results/sink-tuning.md).
GIL_SWITCH_INTERVAL_S = 0.0005
# How long a stopping sink serves the revocation of its partitions after unsubscribing, before it
# closes the consumer anyway. Closing a cooperative consumer while an incremental assignment is
# in flight can block for a whole session timeout (librdkafka issue 4527); leaving the
# subscription first, and serving that rebalance, lets close() return at once.
LEAVE_TIMEOUT_S = 10.0


class Assignments:
    """Taking and giving back partitions under the group's rebalance protocol.

    cooperative-sticky (cooperative): a rebalance hands over only the partitions that move;
    the consumer adds and removes them one set at a time (incremental_assign/unassign). It
    evens the number of partitions per instance over all topics together, not per topic: an
    instance that joins later can get whole quiet topics while another keeps every partition of
    the busy one (measured: bench/results/cost-per-event.md).
    roundrobin (eager): every rebalance revokes everything and hands each instance its whole
    new assignment, dealt partition by partition in topic order, so each topic is split evenly.
    The consumer then sets the whole assignment at once (assign/unassign), and a re-seek
    restarts every partition, since no single partition can be replaced on its own."""

    def __init__(self, strategy: str) -> None:
        self.eager = strategy != "cooperative-sticky"

    def take(self, consumer: Any, start: list[TopicPartition]) -> None:
        """Fetch `start` (eager: `start` is the whole assignment)."""
        if self.eager:
            consumer.assign(start)
        else:
            consumer.incremental_assign(start)

    def give_back(self, consumer: Any, tps: list[TopicPartition]) -> None:
        """Stop fetching `tps` (eager: they are the whole assignment)."""
        if self.eager:
            consumer.unassign()
        else:
            consumer.incremental_unassign(tps)

    def reseek_scope(
        self, partitions: list[PartitionKey], assigned: set[PartitionKey]
    ) -> list[PartitionKey]:
        """The partitions a re-seek of `partitions` restarts: those of them still assigned
        (eager: every assigned partition, as assign() replaces the whole assignment)."""
        if self.eager:
            return sorted(assigned)
        return [tp for tp in partitions if tp in assigned]


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
        self.health = health or HealthState()
        self.clock = clock
        topics = settings.kafka.topics
        self.topics = [*topics.all_clean(), topics.identity, topics.schema_changes]
        self.batcher = Batcher(
            settings.flush_rows,
            settings.flush_bytes,
            settings.flush_age_s,
            # half for the buffers, half for the flush in flight behind them
            settings.max_buffered_bytes // 2,
            # a forget published after decoding: rows dropped again as each batch is taken
            suppressed=None if suppressions is None else (lambda: suppressions.identifiers),
        )
        self.progress = Progress()
        self.assignments = Assignments(settings.assignment_strategy)
        self.intake = RecordIntake(
            settings, rules, self.batcher, self.progress, metrics, suppressions
        )
        self.flusher = Flusher(
            settings, self.batcher, self.progress, loader, metrics, self.health, clock
        )
        self._stop = threading.Event()
        self._stopping = False
        self._last_lag = 0.0
        self.consumer: Any = None
        self.dead_letters: DeadLetters | None = None

    def attach(self, consumer: Any, producer: Any) -> None:
        """Use these Kafka clients (run() makes them; tests hand in fakes)."""
        self.consumer = consumer
        self.dead_letters = DeadLetters(self.settings, producer)
        self.intake.dead_letters = self.dead_letters
        self.flusher.bind(self, self.dead_letters)

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; a final flush loads what is buffered."""
        self._stop = stop
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        _young, older, oldest = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
        self.attach(
            Consumer(self.consumer_conf()),
            Producer(producer_config(self.settings.kafka, "sink-dlq")),
        )
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
            self.stop_flush()
            self.leave()
        finally:
            self.close()
        logger.info("stopped")

    def consumer_conf(self) -> dict[str, Any]:
        """The Kafka consumer's configuration (librdkafka's names)."""
        extra: dict[str, Any] = {
            "queued.max.messages.kbytes": self.settings.fetch_queue_kbytes,
            "enable.partition.eof": False,
            "session.timeout.ms": self.settings.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.settings.session_timeout_ms // 10),
            "partition.assignment.strategy": self.settings.assignment_strategy,
        }
        if self.settings.instance_id:
            extra["group.instance.id"] = self.settings.instance_id
        return consumer_config(self.settings.kafka, "sink", self.settings.group_id, **extra)

    def stop_flush(self) -> None:
        """The final flush: load what is buffered, then commit the stored offsets to Kafka."""
        logger.info("stopping: flushing %d buffered records", self.batcher.total_records)
        self.flusher.flush_final()
        self.commit(
            [TopicPartition(t, p, o) for t, p, o in self.batcher.stored()], asynchronous=False
        )

    def leave(self, timeout_s: float = LEAVE_TIMEOUT_S) -> None:
        """Give the partitions back before closing: unsubscribe, then serve the revocation (and
        any rebalance in flight) until nothing is assigned. Everything read was loaded by the
        final flush; records that still arrive are not buffered (the next owner reads them)."""
        self._stopping = True
        try:
            self.consumer.unsubscribe()
            deadline = self.clock() + timeout_s
            while self.consumer.assignment() and self.clock() < deadline:
                self.consumer.consume(self.settings.consume_batch, 0.1)
        except KafkaException as exc:  # close() still leaves the group
            logger.info("leaving the group before closing failed: %s", exc)

    def close(self) -> None:
        """Wait for a flush in flight (after an error: its outcome is not acted on), leave the
        group and close the clients."""
        self.flusher.drop_ahead()
        self.health.set_ready(False, "stopping")
        self._stopping = True
        try:
            try:
                self.flusher.settle(FlushMode.CALLBACK)  # after an error: wait for the worker
            except Exception:  # the error that stopped the loop is the one reported
                logger.warning("flush in flight failed while stopping", exc_info=True)
            self.consumer.close()
        finally:
            self.flusher.shutdown()
            if self.dead_letters is not None:
                self.dead_letters.close()
            self.loader.close()

    def _step(self) -> None:
        timeout = self.flusher.poll_timeout(self.clock())
        messages = self.consumer.consume(self.settings.consume_batch, timeout)
        self.progress.new_poll()
        later = self.progress.pending_reseeks()
        if later:
            self.reseek(later)
        now = self.clock()
        for msg in messages:
            self.intake.handle(msg, now)
        self.intake.count_records()
        now = self.clock()
        self.flusher.step(now)
        self.metrics.buffered_bytes.set(self.batcher.total_bytes)
        self.metrics.buffered_records.set(self.batcher.total_records)
        if now - self._last_lag >= self.settings.lag_interval_s:
            self._last_lag = now
            self._update_lag()

    def serve(self, seconds: float) -> None:
        """Consume for up to `seconds` while a flush backs off: rebalance callbacks are served
        and what arrives is buffered."""
        for msg in self.consumer.consume(self.settings.consume_batch, seconds):
            self.intake.handle(msg, self.clock())
        self.intake.count_records()

    # -- rebalancing -------------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        logger.info("assigned %d partitions", len(tps))
        # the warehouse connection is needed: no flush in flight
        self.flusher.settle(FlushMode.CALLBACK)
        self._start(tps)

    def _start(self, tps: list[PartitionKey]) -> None:
        """Start fetching newly assigned partitions at the offsets the warehouse holds for
        them. While the warehouse cannot be read this waits (backing off): starting anywhere
        else could load a record twice or skip one."""
        stored = self._read_offsets(tps)
        if stored is None:  # stopping: take the partitions without buffering them
            for tp in tps:
                self.progress.assign(tp, None)
            self.assignments.take(self.consumer, [TopicPartition(t, p) for t, p in tps])
            return
        for tp, offset in stored.items():
            self.progress.assign(tp, offset)
        self._fetch_from(stored)

    def reseek(self, partitions: list[PartitionKey]) -> None:
        """Forget the partitions' buffers and restart them where the warehouse says (after a
        fenced flush: the other writer's offsets)."""
        self.flusher.settle(FlushMode.STEADY)  # the warehouse connection is needed
        tps = self.assignments.reseek_scope(partitions, self.progress.assigned())
        if not tps:
            return
        if not self.assignments.eager:  # eager: the assign() below replaces everything
            self.consumer.incremental_unassign([TopicPartition(t, p) for t, p in tps])
        for topic, partition in tps:
            self.progress[(topic, partition)].reseek()
            self.batcher.drop(topic, partition)
        stored = self._read_offsets(tps)
        if stored is None:  # stopping: take the partitions without buffering them
            for tp in tps:
                self.progress[tp].resume(None)
            self.assignments.take(self.consumer, [TopicPartition(t, p) for t, p in tps])
            return
        for tp in tps:
            if tp in stored:
                self.progress[tp].resume(stored[tp])
            else:
                self.progress.forget(tp)
        self._fetch_from(stored)

    def _fetch_from(self, stored: dict[PartitionKey, int]) -> None:
        start = []
        for (topic, partition), offset in stored.items():
            self.batcher.assign(topic, partition, offset)
            start.append(
                TopicPartition(topic, partition, offset)
                if offset >= 0
                else TopicPartition(topic, partition)
            )
        self.assignments.take(self.consumer, start)
        # Kafka's committed offsets follow the warehouse even where nothing is loaded any more
        self.commit([tp for tp in start if tp.offset >= 0], asynchronous=True)

    def _read_offsets(self, tps: list[PartitionKey]) -> dict[PartitionKey, int] | None:
        delay = self.settings.retry_initial_s
        while True:
            try:
                return self.loader.ensure_offsets(tps)
            except RetryableError as exc:
                self.metrics.retries.inc()
                logger.warning("cannot read the offsets of %d partitions: %s", len(tps), exc)
                self.health.set_ready(False, "warehouse unavailable")
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, self.settings.retry_max_s)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Still the owner until this returns: load what is held for these partitions first."""
        tps = {(p.topic, p.partition) for p in partitions}
        self.flusher.settle(FlushMode.CALLBACK)
        if not self._stopping:  # a failing flush (or stop) drops them
            self.flusher.flush_revoked(tps)
        self._release(partitions, PartitionState.REVOKED)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Another instance may own these already: nothing of them is loaded any more."""
        self.flusher.settle(FlushMode.CALLBACK)
        self._release(partitions, PartitionState.LOST)

    def _release(self, partitions: list[TopicPartition], why: PartitionState) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        dropped = sum(self.batcher.held(t, p) for t, p in tps)
        if dropped:
            logger.warning(
                "%s %d partitions; %d buffered records not loaded (the next owner reads them)",
                why.value,
                len(tps),
                dropped,
            )
        else:
            logger.info("%s %d partitions", why.value, len(tps))
        assigned = self.progress.assigned()
        unassign = [TopicPartition(t, p) for t, p in tps if (t, p) in assigned]
        for topic, partition in tps:
            self.batcher.drop(topic, partition)
            self.progress.release((topic, partition), why)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(topic, str(partition))
        if unassign:
            self.assignments.give_back(self.consumer, unassign)

    # -- Kafka offsets (advice) --------------------------------------------------------------
    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:  # advice only: the warehouse holds the truth
            logger.info("Kafka offset commit (advice) failed: %s", exc)

    def _update_lag(self) -> None:
        for topic, partition in sorted(self.progress.assigned()):
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
