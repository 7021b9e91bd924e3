"""The sink's Kafka loop (confluent-kafka): thin, the decisions live in batcher/rows/loader.

- read_committed consumer of segment.events.*, segment.identity and segment.schema-changes (the
  processors' findings, loaded beside the sink's own), cooperative rebalancing;
- on assignment each partition starts at the offset stored in the warehouse (not Kafka's);
- records become rows (rows.py) in per-partition buffers (batcher.py); when a buffer is full or
  old, every buffer that moved is flushed as one warehouse transaction (loader.py);
- a flush runs in a worker thread while the next records are consumed and turned into rows (the
  warehouse is another process: its time overlaps ours). At most one flush is in flight; the
  buffers behind it start at its new offsets, so the next flush's compare-and-set expects what
  it commits. Every outcome is handled here, in the consumer's thread, before the warehouse
  connection is used again (`_settle`);
- when the buffers are ready while a flush is in flight, the next flush is prepared ahead in
  this thread from a snapshot of them (rows typed and staged to its Parquet file, no warehouse
  use), so its warehouse work can start as soon as the one in flight ends; it is taken exactly
  as the snapshot saw it if no buffer it saw was dropped, re-sought or taken meanwhile;
- after the warehouse committed, the offsets are committed to Kafka too, as advice only;
- a retryable warehouse error pauses consumption, backs off and retries the same batch; a
  fenced flush (another instance moved the offsets) drops the batch and re-seeks;
- revoked partitions are flushed before they are released (a stop or a rebalance does not throw
  away what was read); lost ones are dropped;
- undecodable records go to the DLQ with their origin, and their partition moves on; so do
  records whose data the warehouse refuses (a misfit): a flush that fails for a record's data
  is split until that record stands alone, the rest loads (misfits.py has the rules).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from runtime.health import HealthState
from runtime.kafka_config import consumer_config, producer_config
from runtime.rules import Rules
from schemas.codec import CLEAN_EVENT, IDENTITY_LINK, SCHEMA_CHANGE, AvroCodec
from schemas.errors import FatalError, RecordError, RetryableError
from schemas.topics import (
    HEADER_ERROR,
    HEADER_ERROR_CODE,
    HEADER_ORIGIN_OFFSET,
    HEADER_ORIGIN_PARTITION,
    HEADER_ORIGIN_TOPIC,
)
from sinks.snowflake import misfits
from sinks.snowflake.batcher import Batcher, FlushBatch, Snapshot
from sinks.snowflake.errors import FencedError, WarehouseMisfitError
from sinks.snowflake.loader import FlushResult, SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.rows import (
    Origin,
    TableRow,
    event_rows,
    identity_row,
    schema_change_row,
    schema_name,
)
from sinks.snowflake.settings import SinkSettings

logger = logging.getLogger(__name__)

# Estimated in-memory bytes per byte of Avro: decoded rows (dicts of Python objects, the
# per-event copy, the audit document) take this many times the record's size.
MEMORY_PER_AVRO_BYTE = 12
TP = tuple[str, int]
# Young-generation threshold of the cyclic garbage collector while the sink runs. The buffers
# hold hundreds of thousands of dicts that never form cycles; at the default (700) the collector
# runs every few hundred decoded records and took ~40% of row building (measured: 50k records'
# rows 1.0 s -> 0.65 s). Older generations keep their defaults, so cycles are still collected.
GC_YOUNG_THRESHOLD = 50_000
# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms). The
# flush worker's warehouse calls (the connector's HTTP round trips, the PUT's file transfer) wait
# for the GIL after every reply while this thread decodes records or prepares the next flush;
# at 5 ms a PUT took ~0.7 s instead of ~0.15 s. Measured with bench/sink.py: steady state
# ~9,000 -> ~11,000-12,000 records/s at 0.5 ms; 0.2 ms was no better.
GIL_SWITCH_INTERVAL_S = 0.0005


class Suppressions(Protocol):
    def is_suppressed(self, user_id: object = None, anonymous_id: object = None) -> bool: ...

    @property
    def identifiers(self) -> AbstractSet[str]: ...


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
        self.changes_topic = topics.schema_changes
        self.dlq_topic = topics.dlq
        self.topics = [*topics.all_clean(), topics.identity, topics.schema_changes]
        self.codec = AvroCodec()
        self.batcher = Batcher(
            settings.flush_rows,
            settings.flush_bytes,
            settings.flush_age_s,
            # half for the buffers, half for the flush in flight behind them
            settings.max_buffered_bytes // 2,
            # a forget published after decoding: rows dropped again as each batch is taken
            suppressed=None if suppressions is None else (lambda: suppressions.identifiers),
        )
        self._audit = {s.name: s.audit for s in rules.sources}
        self._stop = threading.Event()
        self._assigned: set[TP] = set()  # assigned to the consumer (fetching)
        self._skip: set[TP] = set()  # re-sought during this consume() batch
        self._lost: set[TP] = set()  # revoked while a flush was retrying
        self._dlq_pending = 0
        self._last_lag = 0.0
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="sink-flush")
        self._inflight: tuple[FlushBatch, Future[FlushResult]] | None = None
        self._ahead: Snapshot | None = None  # the next flush, prepared while one is in flight
        self._reseek_later: set[TP] = set()  # kept partitions of a batch abandoned in a callback
        self._retrying = False
        self._stopping = False
        self._counters: dict[tuple[str, str], Any] = {}  # records counter children
        self._counts: dict[tuple[str, str], int] = {}  # records handled, not counted yet
        self.consumer: Any = None
        self.producer: Any = None
        self._fetcher: Any = None  # reads a refused record again for the DLQ (misfits)

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; a final flush loads what is buffered."""
        self._stop = stop
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        _young, older, oldest = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
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
            logger.info("stopping: flushing %d buffered records", self.batcher.total_records)
            self._flush(final=True)
            self._commit(
                [TopicPartition(t, p, o) for t, p, o in self.batcher.stored()], asynchronous=False
            )
        finally:
            self._drop_ahead()
            self.health.set_ready(False, "stopping")
            self._stopping = True
            try:
                try:
                    self._settle(in_callback=True)  # after an error: wait for the worker
                except Exception:  # the error that stopped the loop is the one reported
                    logger.warning("flush in flight failed while stopping", exc_info=True)
                self.consumer.close()
            finally:
                self._worker.shutdown(wait=True)
                self.producer.flush(10)
                if self._fetcher is not None:
                    self._fetcher.close()
                self.loader.close()

    def _step(self) -> None:
        messages = self.consumer.consume(self.settings.consume_batch, 0.2)
        self._skip.clear()
        if self._reseek_later:
            later, self._reseek_later = sorted(self._reseek_later), set()
            self._reseek_partitions(later)
        now = self.clock()
        for msg in messages:
            self._handle(msg, now)
        self._count_records()
        now = self.clock()
        if self._inflight is not None:
            batch, future = self._inflight
            # keep consuming while the warehouse works, up to the memory bound
            if self._ahead is None and not future.done() and self.batcher.ready(now):
                self._prepare_ahead(now)
            full = self.batcher.total_bytes + batch.bytes >= self.settings.max_buffered_bytes
            if future.done() or full:
                self._settle()
        if self._inflight is None and (self._ahead is not None or self.batcher.ready(now)):
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
        self._settle(in_callback=True)  # the warehouse connection is needed: no flush in flight
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
        # Kafka's committed offsets follow the warehouse even where nothing is loaded any more
        self._commit([tp for tp in start if tp.offset >= 0], asynchronous=True)

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
        """Still the owner until this returns: load what is held for these partitions first."""
        tps = {(p.topic, p.partition) for p in partitions}
        self._settle(in_callback=True, releasing=tps)
        if not self._retrying and not self._stopping:  # a failing flush (or stop) drops them
            batch = self.batcher.take(tps)
            if batch is not None:
                self._load(batch, in_callback=True)
        self._release(partitions, "revoked")

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Another instance may own these already: nothing of them is loaded any more."""
        self._settle(in_callback=True, releasing={(p.topic, p.partition) for p in partitions})
        self._release(partitions, "lost")

    def _release(self, partitions: list[TopicPartition], why: str) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        dropped = sum(self.batcher.held(t, p) for t, p in tps)
        if dropped:
            logger.warning(
                "%s %d partitions; %d buffered records not loaded (the next owner reads them)",
                why,
                len(tps),
                dropped,
            )
        else:
            logger.info("%s %d partitions", why, len(tps))
        assigned = [TopicPartition(t, p) for t, p in tps if (t, p) in self._assigned]
        self._reseek_later.difference_update(tps)
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
            elif topic == self.changes_topic:
                rows = [schema_change_row(self.codec.decode(SCHEMA_CHANGE, value), origin)]
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
            if rows and value is not None:
                reason = misfits.oversized(rows, len(value))
                if reason is not None:
                    self.metrics.misfits.labels(misfits.TOO_LARGE).inc()
                    raise RecordError(reason, code=misfits.TOO_LARGE)
        except RecordError as exc:
            rows = []
            self._to_dlq(msg, exc.at(topic, partition, offset))
            outcome = "dlq"
        except (KeyError, TypeError, ValueError) as exc:
            self._to_dlq(
                msg, RecordError(f"{type(exc).__name__}: {exc}").at(topic, partition, offset)
            )
            outcome = "dlq"
        size = len(value) * MEMORY_PER_AVRO_BYTE if value else 64
        if self.batcher.add(topic, partition, offset, rows, size, now):
            key = (topic, outcome)
            self._counts[key] = self._counts.get(key, 0) + 1

    def _count_records(self) -> None:
        """Add the records handled since the last call to their counters (one locked
        increment per topic and outcome, not one per record)."""
        for key, n in self._counts.items():
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = self.metrics.records.labels(*key)
            counter.inc(n)
        self._counts.clear()

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
        """Hand everything buffered to the worker (or, when stopping, load it here)."""
        self._settle(final=final)
        if self._reseek_later:
            later, self._reseek_later = sorted(self._reseek_later), set()
            self._reseek_partitions(later)
        batch = self._take_ahead() if not final else None
        if batch is None:
            self._drop_ahead()
            batch = self.batcher.take()
        if batch is None:
            return
        self._lost.clear()
        if final:
            self._load(batch, final=True)
            return
        self._ack_dlq()
        self._inflight = (batch, self._worker.submit(self.loader.flush, batch))

    def _prepare_ahead(self, now: float) -> None:
        """Prepare the next flush while the one in flight is in the warehouse."""
        snapshot = self.batcher.peek(now)
        if snapshot is None:
            return
        try:
            snapshot.batch.prepared = self.loader.prepare(snapshot.batch)
        except Exception:  # an optimisation only: the flush prepares it again and reports
            logger.warning("preparing the next flush ahead failed", exc_info=True)
        self._ahead = snapshot
        if snapshot.batch.prepared is None:
            self.metrics.prepared_ahead.labels("not_prepared").inc()
        logger.debug(
            "next flush of %d records %s",
            snapshot.batch.records,
            "prepared ahead" if snapshot.batch.prepared else "needs the warehouse first",
        )

    def _take_ahead(self) -> FlushBatch | None:
        """The batch prepared ahead, if it is still what the buffers hold."""
        snapshot, self._ahead = self._ahead, None
        if snapshot is None or snapshot.batch.prepared is None:
            return None  # nothing done ahead: take all there is
        batch = self.batcher.take_snapshot(snapshot)
        if batch is None:
            self.metrics.prepared_ahead.labels("dropped").inc()
            snapshot.batch.discard_prepared()
        return batch

    def _drop_ahead(self) -> None:
        snapshot, self._ahead = self._ahead, None
        if snapshot is not None and snapshot.batch.prepared is not None:
            self.metrics.prepared_ahead.labels("dropped").inc()
            snapshot.batch.discard_prepared()

    def _ack_dlq(self) -> None:
        """DLQ copies of the batch's undecodable records must be in Kafka before its offsets
        move past them."""
        if self._dlq_pending:
            if self.producer.flush(30) > 0:
                raise FatalError("DLQ records not acknowledged by Kafka; not committing offsets")
            self._dlq_pending = 0

    def _settle(
        self, in_callback: bool = False, releasing: set[TP] | None = None, final: bool = False
    ) -> None:
        """Wait for the flush in flight and act on its outcome. Inside a rebalance callback a
        failed flush is not retried (that needs consume()): its batch is abandoned and its
        kept partitions re-read from the warehouse offsets after the callback."""
        if self._inflight is None:
            return
        batch, future = self._inflight
        self._inflight = None
        try:
            result = future.result()
        except FencedError:
            self._fenced(batch, in_callback)
            return
        except WarehouseMisfitError as exc:
            if in_callback:
                self._abandon(batch, releasing, exc)
                return
            self._isolate(batch, exc, final=final)
            return
        except RetryableError as exc:
            self.metrics.retries.inc()
            self.metrics.flushes.labels("retried").inc()
            if in_callback:
                self._abandon(batch, releasing, exc)
                return
            self._load(batch, first_error=exc, final=final)
            return
        self._loaded(batch, result, sync_commit=False)

    def _abandon(self, batch: FlushBatch, releasing: set[TP] | None, exc: Exception) -> None:
        """A flush that failed inside a rebalance callback: not retried there (that needs
        consume()); its kept partitions are re-read from the warehouse offsets afterwards."""
        kept = {(s.topic, s.partition) for s in batch.slices} - (releasing or set())
        logger.warning(
            "flush of %d records failed during a rebalance, not retried now (its "
            "partitions are re-read): %s",
            batch.records,
            exc,
        )
        self._reseek_later |= kept & self._assigned

    def _load(
        self,
        batch: FlushBatch,
        *,
        final: bool = False,
        in_callback: bool = False,
        first_error: RetryableError | None = None,
    ) -> bool:
        """Load `batch` here, retrying retryable errors with back-off while serving the group,
        setting apart the records of a misfit. A final or in-callback load gives up after a
        few attempts (nothing is committed). True when all of it loaded."""
        self._ack_dlq()
        delay = self.settings.retry_initial_s
        attempts = 0
        paused: list[TopicPartition] = []
        error = first_error
        bounded = final or in_callback
        misfit: WarehouseMisfitError | None = None
        self._retrying = True
        try:
            while True:
                batch = batch.without(self._lost)
                if not batch.slices:
                    return False
                if error is not None:
                    attempts += 1
                    limit = self.settings.retry_max_attempts
                    if in_callback and attempts >= 3:
                        logger.warning(
                            "flush of %d records of revoked partitions failed %d times; not "
                            "loaded here (the next owner reads them): %s",
                            batch.records,
                            attempts,
                            error,
                        )
                        return False
                    if (final and attempts >= 3) or (limit and attempts > limit):
                        raise FatalError(
                            f"flush failed after {attempts} attempts, nothing committed: {error}"
                        ) from error
                    logger.warning(
                        "flush of %d records failed, retry %d in %.1f s: %s",
                        batch.records,
                        attempts,
                        delay,
                        error,
                    )
                    self.health.set_ready(False, "warehouse unavailable")
                    if not paused and not bounded:
                        paused = self.consumer.assignment()
                        self.consumer.pause(paused)
                    self._wait(delay, bounded)
                    delay = min(delay * 2, self.settings.retry_max_s)
                    batch = batch.without(self._lost)
                    if not batch.slices:
                        return False
                try:
                    result = self.loader.flush(batch)
                    break
                except FencedError:
                    self._fenced(batch, in_callback)
                    return False
                except WarehouseMisfitError as exc:
                    misfit = exc
                    break
                except RetryableError as exc:
                    if attempts or first_error is None:
                        self.metrics.retries.inc()
                        self.metrics.flushes.labels("retried").inc()
                    error = exc
        finally:
            self._retrying = False
            if paused:
                still = [tp for tp in paused if (tp.topic, tp.partition) in self._assigned]
                if still:
                    self.consumer.resume(still)
        if misfit is not None:
            if in_callback:  # revoked partitions: the next owner sets the record apart
                logger.warning(
                    "flush of %d records of revoked partitions refused for its data; not "
                    "loaded here (the next owner reads them): %s",
                    batch.records,
                    misfit,
                )
                return False
            return self._isolate(batch, misfit, final=final)
        self._loaded(batch, result, sync_commit=bounded)
        return True

    def _isolate(self, batch: FlushBatch, error: WarehouseMisfitError, *, final: bool) -> bool:
        """`batch` failed for some record's data: load it in parts until the records refused
        stand alone, send those to the DLQ and load the rest (misfits.py). True when all of
        it is in the warehouse (or the DLQ)."""
        self.metrics.misfit_flushes.inc()
        self.metrics.flushes.labels("misfit").inc()
        parts = misfits.split(batch)
        if parts is None:
            if not batch.rows:
                raise FatalError(
                    f"a flush with no rows was refused for its data, nothing committed: {error}"
                ) from error
            self._dead_letter(batch, error)
            parts = [misfits.offsets_only(batch)]
        else:
            logger.warning(
                "flush of %d records from %d partitions refused for its data; loading it in "
                "parts to set the refused records apart: %s",
                batch.records,
                len(batch.slices),
                error,
            )
        chained = len(batch.slices) == 1  # the parts share a partition's offset chain
        loaded = True
        for part in parts:
            if not self._load(part, final=final):
                loaded = False
                if chained:
                    return False
        return loaded

    def _dead_letter(self, batch: FlushBatch, error: WarehouseMisfitError) -> None:
        """The one record of `batch` to the DLQ, as read from Kafka (the buffers hold rows)."""
        topic, partition, offset = misfits.refused_record(batch)
        self.metrics.misfits.labels(f"warehouse_{error.code}").inc()
        msg = self._fetch(topic, partition, offset)
        reason = RecordError(str(error), code=f"warehouse_misfit_{error.code}")
        reason.at(topic, partition, offset)
        logger.warning("record to the DLQ: %s", reason)
        headers = [
            (HEADER_ERROR, reason.reason.encode()),
            (HEADER_ERROR_CODE, reason.code.encode()),
            (HEADER_ORIGIN_TOPIC, topic.encode()),
            (HEADER_ORIGIN_PARTITION, str(partition).encode()),
            (HEADER_ORIGIN_OFFSET, str(offset).encode()),
        ]
        value = msg.value() if msg is not None else None
        key = msg.key() if msg is not None else None
        self.producer.produce(self.dlq_topic, value=value, key=key, headers=headers)
        self.producer.poll(0)
        self._dlq_pending += 1

    def _fetch(self, topic: str, partition: int, offset: int) -> Message | None:
        """One record read again from Kafka (a consumer of its own, assigned, never in the
        group); None if it cannot be read within a few seconds (then the DLQ copy carries the
        headers only)."""
        if self._fetcher is None:
            conf = consumer_config(
                self.settings.kafka,
                "sink-misfits",
                f"{self.settings.group_id}-misfits",
                **{"enable.partition.eof": True},
            )
            self._fetcher = Consumer(conf)
        self._fetcher.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 10.0
        try:
            while time.monotonic() < deadline:
                msg = self._fetcher.poll(0.5)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        break
                    continue
                if int(msg.offset() or 0) == offset:
                    return msg
                if int(msg.offset() or 0) > offset:
                    break
        finally:
            self._fetcher.unassign()
        logger.warning("could not read %s[%d]@%d again for the DLQ", topic, partition, offset)
        return None

    def _fenced(self, batch: FlushBatch, in_callback: bool) -> None:
        self.metrics.fenced.inc()
        self.metrics.flushes.labels("fenced").inc()
        logger.warning(
            "flush of %d records fenced: another instance moved the offsets; "
            "the batch is dropped and its partitions re-read",
            batch.records,
        )
        if in_callback:
            self._reseek_later |= {(s.topic, s.partition) for s in batch.slices} & self._assigned
        else:
            self._reseek(batch)

    def _loaded(self, batch: FlushBatch, result: FlushResult, sync_commit: bool) -> None:
        self.health.set_ready(True, "consuming")
        for topic, dropped in batch.suppressed.items():  # dropped at flush time (batcher.py)
            self.metrics.records.labels(topic, "suppressed").inc(dropped)
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
        self._commit_advice(batch, asynchronous=not sync_commit)

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
            self._count_records()

    def _reseek(self, batch: FlushBatch) -> None:
        """After fencing: forget the partitions' buffers and restart them where the warehouse
        says (the other writer's offsets)."""
        self._reseek_partitions([(s.topic, s.partition) for s in batch.slices])

    def _reseek_partitions(self, partitions: list[TP]) -> None:
        self._settle()  # the warehouse connection is needed: no flush in flight
        tps = [tp for tp in partitions if tp in self._assigned]
        if not tps:
            return
        self.consumer.incremental_unassign([TopicPartition(t, p) for t, p in tps])
        for topic, partition in tps:
            self.batcher.drop(topic, partition)
            self._skip.add((topic, partition))
        self._assigned.difference_update(tps)
        self._start(tps)

    def _commit_advice(self, batch: FlushBatch, asynchronous: bool = True) -> None:
        self._commit(
            [
                TopicPartition(s.topic, s.partition, s.new)
                for s in batch.slices
                if (s.topic, s.partition) in self._assigned
            ],
            asynchronous,
        )

    def _commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
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
