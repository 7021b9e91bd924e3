"""The edge's Kafka producer: acks=all, idempotent, bounded, its deliveries bridged to asyncio.

``send(records)`` resolves only when Kafka has acknowledged every record of the request; it
raises a 503 Rejection (with Retry-After) when the records cannot be handed over (queue full,
brokers known to be down) or are not all acknowledged within ``produce_timeout_s``. Records
handed over before such an answer may still be written later: the client retries and the
messageId dedupe downstream removes the copies (at least once, never a 200 for a lost event).

librdkafka calls the delivery callbacks from ``poll()``, which a daemon thread runs; the last
callback of a request wakes the event loop once (``call_soon_threadsafe``), so the per-event
cost in Python is one counter decrement. (Polling from the event loop instead, with a 1 ms
timer, was measured slower: fewer events/s and a higher p99; bench/results/ingest-hot-path.md.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from ingest.metrics import IngestMetrics
from ingest.records import OutRecord
from ingest.rejections import Rejection
from ingest.settings import IngestSettings
from runtime.kafka_config import producer_config
from schemas.errors import FatalError
from schemas.topics import CALL_TYPES

logger = logging.getLogger(__name__)

_PROBE_INTERVAL_S = 1.0


class _Pending:
    """The records of one request on their way to Kafka."""

    __slots__ = ("error", "failed", "future", "loop", "remaining")

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.remaining = n
        self.failed = 0
        self.error: KafkaError | None = None
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def on_delivery(self, err: KafkaError | None, _msg: Any) -> None:  # poll thread
        if err is not None:
            self.failed += 1
            self.error = err
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class EventProducer:
    """Writes a request's records to the raw topics and waits for all acknowledgements."""

    def __init__(self, settings: IngestSettings, metrics: IngestMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        topics = settings.kafka.topics
        self._topic_of = {ct: topics.raw(ct) for ct in CALL_TYPES}
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._up = False
        self._fatal: str | None = None
        self._last_probe = 0.0

    # ----------------------------------------------------------------- lifecycle

    def config(self) -> dict[str, Any]:
        s = self._settings
        timeout_ms = int(s.produce_timeout_s * 1000)
        return producer_config(
            s.kafka,
            "ingest",
            **{
                "linger.ms": s.linger_ms,
                "batch.size": s.batch_bytes,
                "compression.type": s.compression,
                "queue.buffering.max.messages": s.queue_max_messages,
                "queue.buffering.max.kbytes": s.queue_max_kbytes,
                # A record not acknowledged when its request is answered 503 fails soon after.
                "message.timeout.ms": max(timeout_ms, 1000),
                "request.timeout.ms": max(min(timeout_ms, 30_000), 1000),
                "error_cb": self._on_error,
            },
        )

    def start(self) -> None:
        """Connect, check that the raw topics exist, and start the delivery thread."""
        self._producer = Producer(self.config())
        try:
            metadata = self._producer.list_topics(timeout=10)
        except KafkaException as exc:
            raise FatalError(
                f"cannot reach Kafka at {self._settings.kafka.bootstrap}: {exc}"
            ) from exc
        if self._settings.check_topics:
            missing = [t for t in self._topic_of.values() if t not in metadata.topics]
            if missing:
                raise FatalError(
                    f"raw topics missing: {', '.join(missing)}; run `segflow topics create`"
                )
        self._up = True
        self._metrics.watch_queue(self.queue_depth)
        self._thread = threading.Thread(target=self._poll_loop, name="ingest-delivery", daemon=True)
        self._thread.start()
        logger.info("producer connected to %s", self._settings.kafka.bootstrap)

    def stop(self, timeout_s: float = 10.0) -> int:
        """Deliver what is queued (up to `timeout_s`), stop the thread; returns records left."""
        if self._producer is None:
            return 0
        left = self._producer.flush(timeout_s)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if left:
            logger.error("%d records not acknowledged at shutdown", left)
        return int(left)

    @property
    def ready(self) -> bool:
        """Connected, brokers not known to be down, no fatal producer error."""
        return self._producer is not None and self._up and self._fatal is None

    @property
    def fatal_error(self) -> str | None:
        return self._fatal

    def queue_depth(self) -> int:
        return len(self._producer) if self._producer is not None else 0

    # ----------------------------------------------------------------- delivery

    def _on_error(self, err: KafkaError) -> None:
        code = err.code()
        if err.fatal():
            self._fatal = err.str()
            logger.error("fatal producer error: %s", err.str())
        elif code == KafkaError._ALL_BROKERS_DOWN:
            if self._up:
                logger.warning("all Kafka brokers down: answering 503 until they are back")
            self._up = False

    def _poll_loop(self) -> None:
        producer = self._producer
        assert producer is not None
        while not self._stopping.is_set():
            producer.poll(0.05)
            if not self._up and time.monotonic() - self._last_probe > _PROBE_INTERVAL_S:
                self._probe(producer)

    def _probe(self, producer: Producer) -> None:
        self._last_probe = time.monotonic()
        try:
            metadata = producer.list_topics(timeout=1.0)
        except KafkaException:
            return
        if metadata.brokers:
            logger.info("Kafka brokers reachable again")
            self._up = True

    def _unavailable(self, code: str, message: str) -> Rejection:
        return Rejection(503, code, message, retry_after_s=self._settings.retry_after_s)

    async def send(self, records: list[OutRecord], headers: list[tuple[str, Any]]) -> None:
        """Produce `records` and return once Kafka acknowledged all; else raise a 503."""
        producer = self._producer
        if producer is None or self._fatal is not None:
            raise self._unavailable("kafka_unavailable", "the producer is not running")
        if not self._up:
            raise self._unavailable("kafka_unavailable", "Kafka is unreachable; retry later")
        n = len(records)
        if len(producer) + n > self._settings.queue_max_messages:
            raise self._unavailable("queue_full", "the edge is at capacity; retry later")
        loop = asyncio.get_running_loop()
        pending = _Pending(n, loop)
        callback = pending.on_delivery
        produce = producer.produce
        topic_of = self._topic_of
        started = time.perf_counter()
        try:
            for call_type, key, value in records:
                produce(topic_of[call_type], value, key, on_delivery=callback, headers=headers)
        except BufferError as exc:
            raise self._unavailable("queue_full", "the edge is at capacity; retry later") from exc
        except KafkaException as exc:
            raise self._unavailable(
                "kafka_unavailable", f"Kafka refused the records: {exc}"
            ) from exc
        try:
            await asyncio.wait_for(asyncio.shield(pending.future), self._settings.produce_timeout_s)
        except TimeoutError as exc:
            raise self._unavailable(
                "kafka_timeout",
                f"Kafka did not acknowledge within {self._settings.produce_timeout_s:g} s",
            ) from exc
        if pending.error is not None:
            logger.warning(
                "%d of %d records not acknowledged: %s", pending.failed, n, pending.error.str()
            )
            raise self._unavailable("kafka_error", "Kafka did not take every event; retry later")
        self._up = True
        self._metrics.delivery_seconds.observe(time.perf_counter() - started)
