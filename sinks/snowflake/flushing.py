"""The sink's flushes: at most one in the warehouse at a time, the next one prepared ahead.

- `flush` hands everything buffered to a worker thread (the warehouse is another process: its
  time overlaps the consumer's decoding); the buffers behind it start at its new offsets, so the
  next flush's compare-and-set expects what it commits;
- while it is in flight and the buffers are ready, the next flush is prepared ahead in the
  consumer's thread from a snapshot of them (`prepare_ahead`: rows typed and staged, no warehouse
  use); it is taken exactly as the snapshot saw it if no buffer it saw was dropped, re-sought or
  taken meanwhile, and its preparation is discarded otherwise. What arrives after the snapshot
  waits for the flush after it, so the snapshot is taken as late as it can be: when the flush in
  flight is expected to end (the recent flushes' duration) within twice the time a preparation
  takes (`FlushPacer`);
- the consumer's loop waits in consume() no longer than until the oldest buffer is due, or, with
  a flush in flight, a short poll (`poll_timeout`): a flush starts as soon as the one before it
  ended and the buffers are due, not up to a consume() timeout later;
- every outcome is handled in the consumer's thread (`settle`), before the warehouse connection
  is used again: a committed flush moves its partitions' progress and is committed to Kafka as
  advice; a retryable error pauses consumption, backs off and retries the same batch (`load`);
  a fenced flush (another instance moved the offsets) drops the batch and re-seeks; a misfit is
  set apart (isolation.py).

How a failure is handled depends on where the sink stands (`FlushMode`): in the loop it retries
until loaded; at the final flush it gives up after a few attempts and stops with an error
(nothing committed); inside a rebalance callback it neither waits nor sets records apart (that
needs consume()): the batch is left, and its partitions are re-read once the callback returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import Enum
from typing import Any, Protocol

from confluent_kafka import TopicPartition

from runtime.health import HealthState
from schemas.errors import FatalError, RetryableError
from schemas.topics import PartitionKey
from sinks.snowflake.batcher import Batcher, FlushBatch, Snapshot
from sinks.snowflake.deadletters import DeadLetters
from sinks.snowflake.errors import FencedError, WarehouseMisfitError
from sinks.snowflake.isolation import isolate
from sinks.snowflake.loader import FlushResult, SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.progress import Progress
from sinks.snowflake.settings import SinkSettings

logger = logging.getLogger(__name__)

# Attempts of a flush at the final flush or inside a rebalance callback before giving up.
BOUNDED_ATTEMPTS = 3
# The consume loop's longest wait for records while nothing is due (its pace when idle).
IDLE_POLL_S = 0.2
# How often the consume loop looks at a flush in flight (has it ended? is it time to prepare the
# next?): the delay between a flush's end and the next one's start is at most this.
IN_FLIGHT_POLL_S = 0.05
# The shortest consume() wait (a buffer due in less is handled after it).
MIN_POLL_S = 0.005
# Weight of the newest measurement in the running estimates of a flush's and a preparation's
# duration.
ESTIMATE_WEIGHT = 0.3


class FlushPacer:
    """When to prepare the next flush ahead: as late as still leaves the preparation done when
    the flush in flight ends, from running estimates of both durations (in seconds)."""

    def __init__(self) -> None:
        self.flush_s: float | None = None
        self.prepare_s: float | None = None

    @staticmethod
    def _blend(estimate: float | None, seconds: float) -> float:
        return seconds if estimate is None else estimate + ESTIMATE_WEIGHT * (seconds - estimate)

    def flushed(self, seconds: float) -> None:
        """A flush took `seconds`, from its hand-over to the consume loop seeing its end, less
        what it spent preparing itself (it was not prepared ahead): the estimate is of the
        warehouse's part, so one flush prepared in the worker does not defer the next one's
        preparation past its end, and that one's too (bench/results/cost-per-event.md)."""
        self.flush_s = self._blend(self.flush_s, seconds)

    def prepared(self, seconds: float) -> None:
        self.prepare_s = self._blend(self.prepare_s, seconds)

    def prepare_due(self, elapsed: float, prepares_itself: bool = False) -> bool:
        """Whether to prepare the next flush now, `elapsed` seconds into the one in flight:
        when that one is expected to end within two preparations and a poll (at once while
        no flush was measured yet). `prepares_itself`: the flush in flight was not prepared
        ahead, so it takes a preparation longer."""
        if self.flush_s is None:
            return True
        prepare = self.prepare_s or 0.0
        expected = self.flush_s + (prepare if prepares_itself else 0.0)
        return elapsed + 2 * prepare + IN_FLIGHT_POLL_S >= expected


class FlushMode(Enum):
    STEADY = "steady"
    """In the consume loop: retry with back-off (serving the group) until loaded."""
    FINAL = "final"
    """Stopping: a few attempts, then a fatal error (nothing committed)."""
    CALLBACK = "callback"
    """Inside a rebalance callback: no waiting on consume(); a failed flush is left and its
    partitions re-read afterwards (the next owner reads the revoked ones)."""


class FlushHost(Protocol):
    """What a flush needs of the Kafka side (consumer.py)."""

    consumer: Any

    def serve(self, seconds: float) -> None:
        """Consume (buffering records, serving rebalance callbacks) for about `seconds`."""

    def reseek(self, partitions: list[PartitionKey]) -> None:
        """Re-read `partitions` from the offsets the warehouse holds, now."""

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        """Commit offsets to Kafka, as advice (the warehouse holds the truth)."""


class Flusher:
    """The flush in flight, the one prepared ahead, and what to do with each outcome."""

    def __init__(
        self,
        settings: SinkSettings,
        batcher: Batcher,
        progress: Progress,
        loader: SnowflakeLoader,
        metrics: SinkMetrics,
        health: HealthState,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.batcher = batcher
        self.progress = progress
        self.loader = loader
        self.metrics = metrics
        self.health = health
        self.clock = clock
        self.host: FlushHost | None = None
        self.dead_letters: DeadLetters | None = None
        self.retrying = False
        """True while a batch is retried here (a revoke then drops its partitions' buffers)."""
        self.inflight: tuple[FlushBatch, Future[FlushResult]] | None = None
        self.inflight_since = 0.0
        """When the flush in flight was handed to the worker (the clock's time)."""
        self.inflight_ahead = False
        """Whether the flush in flight was prepared ahead (else the worker prepares it)."""
        self.ahead: Snapshot | None = None
        self.pacer = FlushPacer()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="sink-flush")

    def bind(self, host: FlushHost, dead_letters: DeadLetters) -> None:
        self.host = host
        self.dead_letters = dead_letters

    def _host(self) -> FlushHost:
        if self.host is None:
            raise FatalError("the sink's flusher is used before its consumer started")
        return self.host

    def _ack_dlq(self) -> None:
        if self.dead_letters is not None:
            self.dead_letters.ack()

    def shutdown(self) -> None:
        self._worker.shutdown(wait=True)

    # -- handing over ------------------------------------------------------------------------
    def step(self, now: float) -> None:
        """In the loop, after a consume() batch: settle the flush in flight when it is done (or
        the buffers are full), else prepare the next one ahead when it is time; start the next
        when ready."""
        if self.inflight is not None:
            batch, future = self.inflight
            # keep consuming while the warehouse works, up to the memory bound
            full = self.batcher.total_bytes + batch.bytes >= self.settings.max_buffered_bytes
            # full: the loop waits for the flush in flight next, so the next is prepared now
            if (
                self.ahead is None
                and not future.done()
                and (
                    full
                    or self.pacer.prepare_due(
                        now - self.inflight_since, prepares_itself=not self.inflight_ahead
                    )
                )
                and self.batcher.ready(now)
            ):
                self.prepare_ahead(now)
            if future.done() or full:
                self.settle(FlushMode.STEADY)
        if self.inflight is None and (self.ahead is not None or self.batcher.ready(now)):
            self.flush()

    def poll_timeout(self, now: float) -> float:
        """How long the loop's next consume() may wait for records: until the oldest buffer is
        due, a short poll while a flush is in flight, `IDLE_POLL_S` at most."""
        if self.inflight is not None:
            return IN_FLIGHT_POLL_S
        due = self.batcher.due_in(now)
        return IDLE_POLL_S if due is None else min(IDLE_POLL_S, max(MIN_POLL_S, due))

    def flush(self) -> None:
        """Hand everything buffered to the worker."""
        self.settle(FlushMode.STEADY)
        self._reseek_pending()
        batch = self._take_ahead()
        if batch is None:
            self.drop_ahead()
            batch = self.batcher.take()
        if batch is None:
            return
        self._hand_over(batch)
        self._ack_dlq()
        self.inflight_since = self.clock()
        self.inflight_ahead = batch.prepared is not None
        self.inflight = (batch, self._worker.submit(self.loader.flush, batch))

    def flush_final(self) -> None:
        """Stopping: load everything buffered here."""
        self.settle(FlushMode.FINAL)
        self._reseek_pending()
        self.drop_ahead()
        batch = self.batcher.take()
        if batch is not None:
            self._hand_over(batch)
            self.load(batch, FlushMode.FINAL)

    def flush_revoked(self, tps: set[PartitionKey]) -> None:
        """Inside the revoke callback: load what is held for `tps` before they are released
        (not while a batch is retried here: its partitions' buffers are dropped)."""
        if self.retrying:
            return
        batch = self.batcher.take(self.progress.loadable(tps))
        if batch is not None:
            self.progress.hand_to_flush(batch.moves())
            self.load(batch, FlushMode.CALLBACK)

    def _hand_over(self, batch: FlushBatch) -> None:
        self.progress.forget_released()  # no batch holds released partitions' records now
        self.progress.hand_to_flush(batch.moves())

    def _reseek_pending(self) -> None:
        later = self.progress.pending_reseeks()
        if later:
            self._host().reseek(later)

    def prepare_ahead(self, now: float) -> None:
        """Prepare the next flush while the one in flight is in the warehouse."""
        snapshot = self.batcher.peek(now)
        if snapshot is None:
            return
        started = self.clock()
        try:
            snapshot.batch.prepared = self.loader.prepare(snapshot.batch)
        except Exception:  # an optimisation only: the flush prepares it again and reports
            logger.warning("preparing the next flush ahead failed", exc_info=True)
        self.pacer.prepared(self.clock() - started)
        self.ahead = snapshot
        if snapshot.batch.prepared is None:
            self.metrics.prepared_ahead.labels("not_prepared").inc()
        logger.debug(
            "next flush of %d records %s",
            snapshot.batch.records,
            "prepared ahead" if snapshot.batch.prepared else "needs the warehouse first",
        )

    def _take_ahead(self) -> FlushBatch | None:
        """The batch prepared ahead, if it is still what the buffers hold."""
        snapshot, self.ahead = self.ahead, None
        if snapshot is None or snapshot.batch.prepared is None:
            return None  # nothing done ahead: take all there is
        batch = self.batcher.take_snapshot(snapshot)
        if batch is None:
            self.metrics.prepared_ahead.labels("dropped").inc()
            snapshot.batch.discard_prepared()
        return batch

    def drop_ahead(self) -> None:
        snapshot, self.ahead = self.ahead, None
        if snapshot is not None and snapshot.batch.prepared is not None:
            self.metrics.prepared_ahead.labels("dropped").inc()
            snapshot.batch.discard_prepared()

    # -- outcomes ----------------------------------------------------------------------------
    def settle(self, mode: FlushMode) -> None:
        """Wait for the flush in flight and act on its outcome."""
        if self.inflight is None:
            return
        batch, future = self.inflight
        self.inflight = None
        try:
            result = future.result()
        except FencedError:
            self._fenced(batch, mode)
            return
        except WarehouseMisfitError as exc:
            if mode is FlushMode.CALLBACK:
                self._abandon(batch, exc)
                return
            self._isolate(batch, exc, mode)
            return
        except RetryableError as exc:
            self.metrics.retries.inc()
            self.metrics.flushes.labels("retried").inc()
            if mode is FlushMode.CALLBACK:
                self._abandon(batch, exc)
                return
            self.load(batch, mode, first_error=exc)
            return
        self.pacer.flushed(max(0.0, self.clock() - self.inflight_since - result.prepared_here_s))
        self._loaded(batch, result, sync_commit=False)

    def _abandon(self, batch: FlushBatch, exc: Exception) -> None:
        """A flush that failed inside a rebalance callback: not retried there (that needs
        consume()); its partitions are re-read from the warehouse offsets afterwards (or
        released by the callback)."""
        logger.warning(
            "flush of %d records failed during a rebalance, not retried now (its "
            "partitions are re-read): %s",
            batch.records,
            exc,
        )
        self.progress.abandon((s.topic, s.partition) for s in batch.slices)

    def load(
        self, batch: FlushBatch, mode: FlushMode, first_error: RetryableError | None = None
    ) -> bool:
        """Load `batch` here, retrying retryable errors with back-off, setting apart the records
        of a misfit. A final or in-callback load gives up after a few attempts (nothing is
        committed). True when all of it loaded."""
        self._ack_dlq()
        delay = self.settings.retry_initial_s
        attempts = 0
        paused: list[TopicPartition] = []
        error = first_error
        bounded = mode is not FlushMode.STEADY
        misfit: WarehouseMisfitError | None = None
        consumer = self._host().consumer
        self.retrying = True
        try:
            while True:
                batch = batch.without(self.progress.released())
                if not batch.slices:
                    return False
                if error is not None:
                    attempts += 1
                    limit = self.settings.retry_max_attempts
                    if mode is FlushMode.CALLBACK and attempts >= BOUNDED_ATTEMPTS:
                        logger.warning(
                            "flush of %d records of revoked partitions failed %d times; not "
                            "loaded here (the next owner reads them): %s",
                            batch.records,
                            attempts,
                            error,
                        )
                        return False
                    if (mode is FlushMode.FINAL and attempts >= BOUNDED_ATTEMPTS) or (
                        limit and attempts > limit
                    ):
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
                        paused = consumer.assignment()
                        consumer.pause(paused)
                    self._wait(delay, bounded)
                    delay = min(delay * 2, self.settings.retry_max_s)
                    batch = batch.without(self.progress.released())
                    if not batch.slices:
                        return False
                try:
                    result = self.loader.flush(batch)
                    break
                except FencedError:
                    self._fenced(batch, mode)
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
            self.retrying = False
            if paused:
                assigned = self.progress.assigned()
                still = [tp for tp in paused if (tp.topic, tp.partition) in assigned]
                if still:
                    consumer.resume(still)
        if misfit is not None:
            if mode is FlushMode.CALLBACK:  # revoked partitions: the next owner sets it apart
                logger.warning(
                    "flush of %d records of revoked partitions refused for its data; not "
                    "loaded here (the next owner reads them): %s",
                    batch.records,
                    misfit,
                )
                return False
            return self._isolate(batch, misfit, mode)
        self._loaded(batch, result, sync_commit=bounded)
        return True

    def _isolate(self, batch: FlushBatch, error: WarehouseMisfitError, mode: FlushMode) -> bool:
        if self.dead_letters is None:
            raise FatalError("a misfit to set apart before the sink's producer exists")
        return isolate(
            batch, error, lambda part: self.load(part, mode), self.dead_letters, self.metrics
        )

    def _fenced(self, batch: FlushBatch, mode: FlushMode) -> None:
        self.metrics.fenced.inc()
        self.metrics.flushes.labels("fenced").inc()
        logger.warning(
            "flush of %d records fenced: another instance moved the offsets; "
            "the batch is dropped and its partitions re-read",
            batch.records,
        )
        tps = [(s.topic, s.partition) for s in batch.slices]
        if mode is FlushMode.CALLBACK:
            self.progress.abandon(tps)
        else:
            self._host().reseek(tps)

    def _loaded(self, batch: FlushBatch, result: FlushResult, sync_commit: bool) -> None:
        self.progress.loaded(batch.moves())
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
        assigned = self.progress.assigned()
        offsets = [
            TopicPartition(s.topic, s.partition, s.new)
            for s in batch.slices
            if (s.topic, s.partition) in assigned
        ]
        self._host().commit(offsets, asynchronous=not sync_commit)

    def _wait(self, seconds: float, bounded: bool) -> None:
        """Back off; in the loop while serving the group and buffering what arrives."""
        deadline = self.clock() + seconds
        while True:
            left = deadline - self.clock()
            if left <= 0:
                return
            if bounded:
                time.sleep(min(left, 0.5))
                continue
            self._host().serve(min(left, 0.5))
