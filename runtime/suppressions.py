"""The suppression list: users who asked to be forgotten, honoured by the edge, the backfill, the
processors, the sink and reverse ETL.

The list lives in the compacted topic ``segment.suppressions`` (key = userId, value = a
``suppression`` record naming the user's linked anonymousIds, tombstone = lifted). Every process
that honours it reads the whole topic into memory at start-up, becomes ready once it has caught
up with the end offsets it saw then, and follows new entries in a background thread.

`ready` is true only while that thread is alive as well (`alive`: running, not failed, not
stopped): a reader that died no longer sees new suppressions, so the edge's and the sink's
/readyz include it and answer 503 rather than let a newly forgotten user's events through.

Memory is bounded by ``max_identifiers``: a list that grows past it stops the reader with a
FatalError rather than silently forgetting a suppression.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from runtime.kafka_config import common_config
from runtime.settings import KafkaSettings
from schemas.codec import SUPPRESSION, AvroCodec
from schemas.errors import CodecError, FatalError, RetryableError
from schemas.topics import Topics

logger = logging.getLogger(__name__)

# Errors that pass by themselves: no leader elected yet, the broker not reachable or slow.
_PASSING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)
WATERMARKS_RETRY_S = 30.0
WATERMARKS_TIMEOUT_S = 10.0
WATERMARKS_BACKOFF_S = 0.2


class SuppressionList:
    """An in-memory view of segment.suppressions, kept current by a daemon thread."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Topics | None = None,
        *,
        max_identifiers: int = 1_000_000,
        poll_timeout_s: float = 0.5,
    ) -> None:
        self._kafka = kafka
        self._topic = (topics or kafka.topics).suppressions
        self._max = max_identifiers
        self._poll_timeout_s = poll_timeout_s
        self._codec = AvroCodec()
        self._lock = threading.Lock()
        self._by_user: dict[str, frozenset[str]] = {}
        self._suppressed: set[str] = set()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- queries -----------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """The reader thread runs, has not failed and was not asked to stop."""
        thread = self._thread
        return (
            thread is not None
            and thread.is_alive()
            and self.error is None
            and not self._stop.is_set()
        )

    @property
    def ready(self) -> bool:
        """Loaded up to the end offsets seen at start, and still following (`alive`)."""
        return self._ready.is_set() and self.alive

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        return self._ready.wait(timeout_s)

    @property
    def identifiers(self) -> AbstractSet[str]:
        """Every suppressed userId and linked identifier, as of now. The reader replaces the set
        on each change and never alters it in place, so a caller may hold it (e.g. for a batch)
        and test membership without a lock."""
        return self._suppressed

    def is_suppressed(self, user_id: object = None, anonymous_id: object = None) -> bool:
        """True when either identifier belongs to a suppressed user."""
        s = self._suppressed
        if not s:
            return False
        return (user_id is not None and str(user_id) in s) or (
            anonymous_id is not None and str(anonymous_id) in s
        )

    def __len__(self) -> int:
        return len(self._by_user)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> SuppressionList:
        self._thread = threading.Thread(target=self._run, name="suppressions", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        conf = common_config(self._kafka, "suppressions")
        conf.update(
            {
                "group.id": f"segflow-suppressions-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        consumer = Consumer(conf)
        try:
            self._follow(consumer)
        except BaseException as exc:  # surfaced to the owner through .error and readiness
            self.error = exc
            logger.error("suppression list reader stopped: %s", exc)
        finally:
            consumer.close()

    def _follow(self, consumer: Consumer) -> None:
        metadata = consumer.list_topics(self._topic, timeout=10)
        topic_meta = metadata.topics.get(self._topic)
        if topic_meta is None or topic_meta.error is not None:
            raise FatalError(
                f"suppression topic {self._topic} is missing: run `segflow topics create`"
            )
        parts = [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in topic_meta.partitions]
        targets: dict[int, int] = {}
        for tp in parts:
            low, high = self._watermarks(consumer, tp)
            if high > low:
                targets[tp.partition] = high
        consumer.assign(parts)
        if not targets:
            self._ready.set()
        while not self._stop.is_set():
            msg = consumer.poll(self._poll_timeout_s)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise RetryableError(f"suppression reader: {err}")
                continue
            self._apply(msg.key(), msg.value())
            part, offset = msg.partition(), msg.offset()
            if part in targets and offset is not None and offset + 1 >= targets[part]:
                del targets[part]
                if not targets:
                    logger.info("suppression list loaded: %d users", len(self._by_user))
                    self._ready.set()

    def _watermarks(self, consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
        """The partition's offsets, asked again while its leader is not known yet (a topic just
        created, a broker restarting) or the broker is slow, up to WATERMARKS_RETRY_S."""
        deadline = time.monotonic() + WATERMARKS_RETRY_S
        while True:
            try:
                low, high = consumer.get_watermark_offsets(tp, timeout=WATERMARKS_TIMEOUT_S)
                return int(low), int(high)
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                passing = err is not None and (err.retriable() or err.code() in _PASSING)
                if not passing or time.monotonic() > deadline or self._stop.is_set():
                    raise
                logger.info("suppression topic offsets not known yet (%s): asking again", err)
                self._stop.wait(WATERMARKS_BACKOFF_S)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        user_id = key.decode("utf-8", "replace")
        with self._lock:
            if value is None:
                self._by_user.pop(user_id, None)
            else:
                try:
                    record = self._codec.decode(SUPPRESSION, value)
                except CodecError:
                    logger.error("unreadable suppression record for a user; skipped")
                    return
                self._by_user[user_id] = frozenset([user_id, *record["identifiers"]])
            suppressed = set().union(*self._by_user.values()) if self._by_user else set()
            if len(suppressed) > self._max:
                raise FatalError(
                    f"suppression list holds {len(suppressed)} identifiers, more than the "
                    f"configured {self._max}; raise the limit"
                )
            self._suppressed = suppressed


def load_suppression_list(
    kafka: KafkaSettings, wait_s: float, topics: Topics | None = None
) -> SuppressionList:
    """A started SuppressionList that has read the whole topic, for a process's start-up.

    Raises FatalError (the reader stopped) when it fails or has not caught up within `wait_s`:
    running without the list would let forgotten users' events through.
    """
    reader = SuppressionList(kafka, topics).start()
    deadline = time.monotonic() + wait_s
    while not reader.wait_ready(0.2):
        if reader.error is not None or time.monotonic() > deadline:
            reader.stop()
            raise FatalError(
                f"the suppression list {reader._topic} did not load within {wait_s:g} s "
                f"({reader.error or 'timed out'}); is Kafka up and `segflow topics create` done?"
            )
    return reader


def publish_suppressions(
    kafka: KafkaSettings,
    entries: dict[str, list[str]],
    *,
    reason: str | None = None,
    lift: bool = False,
    timeout_s: float = 30.0,
) -> None:
    """Add (or, with lift=True, remove) users on the suppression list; waits for acks=all."""
    codec = AvroCodec()
    producer = Producer({**common_config(kafka, "suppressions"), "acks": "all"})
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    now = datetime.now(UTC)
    for user_id, identifiers in entries.items():
        value = None
        if not lift:
            value = codec.encode(
                SUPPRESSION,
                {
                    "userId": user_id,
                    "identifiers": sorted(set(identifiers)),
                    "reason": reason,
                    "suppressedAt": now,
                },
            )
        producer.produce(
            kafka.topics.suppressions, key=user_id, value=value, on_delivery=on_delivery
        )
    deadline = time.monotonic() + timeout_s
    while producer.flush(0.5) > 0:
        if time.monotonic() > deadline:
            raise RetryableError("suppression list: Kafka did not acknowledge in time")
    if failures:
        raise RetryableError(f"suppression list: {failures[0]}")
