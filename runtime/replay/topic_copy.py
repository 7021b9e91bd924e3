"""Copy a time range of one topic into another: keys, values, headers and timestamps kept.

The range is found with the broker's time index (the first offset at or after ``start``, and
at or after ``end``, or the end of the log as it is when the copy is planned), so a copy of a
topic into itself ends. Each copied record gains the header ``schemas.topics.HEADER_REPLAY``
naming its origin (``topic[partition]@offset``). When both topics have the same number of
partitions a record keeps its partition; otherwise the producer's key partitioner places it.

The producer is idempotent (acks=all), so broker retries never duplicate a record. Running the
same copy twice does write the records twice; that is harmless downstream because the
processors and the sink deduplicate by messageId.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from runtime.kafka_config import consumer_config, producer_config
from runtime.rate_limit import RateLimiter
from runtime.replay.offset_reset import GroupOffsets
from runtime.settings import KafkaSettings
from schemas.errors import FatalError, RetryableError
from schemas.topics import HEADER_REPLAY

logger = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class CopyRange:
    """Offsets [start, end) of one source partition, and where its records go."""

    partition: int
    start: int
    end: int
    dest_partition: int | None

    @property
    def count(self) -> int:
        """Upper bound of the records to copy (transaction markers take offsets too)."""
        return max(0, self.end - self.start)


@dataclass
class CopyStats:
    records: int = 0
    bytes: int = 0
    by_partition: dict[int, int] = field(default_factory=dict)


def replay_headers(
    headers: Sequence[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None,
    origin: str,
) -> Headers:
    """The record's headers with HEADER_REPLAY set to its origin (replacing an older one)."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    kept: Headers = [(k, v) for k, v in pairs if k != HEADER_REPLAY]
    kept.append((HEADER_REPLAY, origin.encode("utf-8")))
    return kept


def plan_copy(
    partitions: list[int],
    bounds: dict[int, tuple[int, int]],
    start_offsets: dict[int, int],
    end_offsets: dict[int, int] | None,
    dest_partitions: int,
) -> list[CopyRange]:
    """Offsets to copy per partition. Time-index answers of -1 mean "after the last record"."""
    keep_partition = dest_partitions == len(partitions)
    plan = []
    for p in sorted(partitions):
        low, high = bounds[p]
        start = start_offsets.get(p, -1)
        start = high if start < 0 else max(start, low)
        end = high
        if end_offsets is not None:
            found = end_offsets.get(p, -1)
            end = high if found < 0 else min(found, high)
        plan.append(CopyRange(p, start, max(start, end), p if keep_partition else None))
    return plan


def format_copy_plan(
    source: str, dest: str, start: datetime, end: datetime | None, plan: list[CopyRange]
) -> str:
    until = end.isoformat() if end is not None else "the current end of the log"
    lines = [
        f"copy {source} -> {dest}: records from {start.isoformat()} until {until}",
        f"{'PART':>4} {'FROM':>12} {'TO (excl.)':>12} {'RECORDS':>10} {'DEST PART':>10}",
    ]
    for r in plan:
        dest_part = "by key" if r.dest_partition is None else str(r.dest_partition)
        lines.append(f"{r.partition:>4} {r.start:>12} {r.end:>12} {r.count:>10} {dest_part:>10}")
    lines.append(f"up to {sum(r.count for r in plan)} records")
    return "\n".join(lines)


def _ms(when: datetime) -> int:
    return int(when.astimezone(UTC).timestamp() * 1000)


class TopicCopier:
    """Plans and runs a copy from `source` to `dest` on one cluster."""

    def __init__(
        self,
        kafka: KafkaSettings,
        source: str,
        dest: str,
        *,
        timeout_s: float = 30.0,
        idle_timeout_s: float = 60.0,
        rate: float | None = None,
    ) -> None:
        self._kafka = kafka
        self.source = source
        self.dest = dest
        self._timeout_s = timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._limiter = RateLimiter(rate)
        # The admin helper needs a group name only for group operations, which a copy never does.
        self._offsets = GroupOffsets(kafka, group="segflow-replay-copy", timeout_s=timeout_s)

    def plan(self, start: datetime, end: datetime | None = None) -> list[CopyRange]:
        if end is not None and end <= start:
            raise FatalError("the end of the copy range must be after its start")
        keys = self._offsets.resolve([(self.source, None)])
        dest_count = len(self._offsets.resolve([(self.dest, None)]))
        bounds = self._offsets.bounds(keys)
        starts = self._offsets.offsets_for_time(keys, _ms(start))
        ends = self._offsets.offsets_for_time(keys, _ms(end)) if end is not None else None
        return plan_copy(
            [p for _, p in keys],
            {p: b for (_, p), b in bounds.items()},
            {p: o for (_, p), o in starts.items()},
            {p: o for (_, p), o in ends.items()} if ends is not None else None,
            dest_count,
        )

    def run(
        self, plan: list[CopyRange], progress: Callable[[int], None] | None = None
    ) -> CopyStats:
        """Copy every range of the plan; returns what was written once Kafka acknowledged it."""
        todo = {r.partition: r for r in plan if r.count > 0}
        stats = CopyStats()
        if not todo:
            return stats
        consumer = Consumer(
            consumer_config(
                self._kafka,
                "replay",
                group_id=f"segflow-replay-{uuid.uuid4().hex}",
                **{"enable.partition.eof": True},
            )
        )
        producer = Producer(producer_config(self._kafka, "replay"))
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        try:
            consumer.assign([TopicPartition(self.source, p, r.start) for p, r in todo.items()])
            last_progress = time.monotonic()
            while todo:
                if failures:
                    raise RetryableError(f"copy to {self.dest} failed: {failures[0]}")
                msg = consumer.poll(0.5)
                producer.poll(0)
                if msg is None:
                    if time.monotonic() - last_progress > self._idle_timeout_s:
                        raise RetryableError(
                            f"copy from {self.source} made no progress for "
                            f"{self._idle_timeout_s:.0f}s; partitions left: {sorted(todo)}"
                        )
                    continue
                err = msg.error()
                part = msg.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        rng = todo.get(part) if part is not None else None
                        if rng is not None and (msg.offset() or 0) >= rng.end:
                            self._finish(consumer, todo, rng.partition)
                        continue
                    raise RetryableError(f"reading {self.source}: {err}")
                offset = msg.offset()
                rng = todo.get(part) if part is not None else None
                if rng is None or offset is None or part is None:
                    continue
                if offset >= rng.end:
                    self._finish(consumer, todo, part)
                    continue
                self._limiter.acquire()
                self._produce(producer, msg, rng, delivered)
                last_progress = time.monotonic()
                size = len(msg.value() or b"")
                stats.records += 1
                stats.bytes += size
                stats.by_partition[part] = stats.by_partition.get(part, 0) + 1
                if progress is not None:
                    progress(1)
                if offset + 1 >= rng.end:
                    self._finish(consumer, todo, part)
            deadline = time.monotonic() + self._timeout_s
            while producer.flush(0.5) > 0:
                if time.monotonic() > deadline:
                    raise RetryableError(f"Kafka did not acknowledge the copy to {self.dest}")
            if failures:
                raise RetryableError(f"copy to {self.dest} failed: {failures[0]}")
        finally:
            consumer.close()
        logger.info("copied %d records from %s to %s", stats.records, self.source, self.dest)
        return stats

    def _produce(
        self,
        producer: Producer,
        msg: Message,
        rng: CopyRange,
        delivered: Callable[[KafkaError | None, Message], None],
    ) -> None:
        ts_type, ts = msg.timestamp()
        headers = replay_headers(msg.headers(), f"{self.source}[{rng.partition}]@{msg.offset()}")
        # 0 lets the producer stamp the time; -1 lets the key partitioner choose.
        timestamp = ts if ts_type != TIMESTAMP_NOT_AVAILABLE else 0
        partition = rng.dest_partition if rng.dest_partition is not None else -1
        while True:
            try:
                producer.produce(
                    self.dest,
                    value=msg.value(),
                    key=msg.key(),
                    partition=partition,
                    on_delivery=delivered,
                    timestamp=timestamp,
                    headers=headers,
                )
                return
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:
                raise RetryableError(f"producing to {self.dest}: {exc}") from exc

    def _finish(self, consumer: Consumer, todo: dict[int, CopyRange], part: int) -> None:
        todo.pop(part, None)
        consumer.pause([TopicPartition(self.source, part)])
