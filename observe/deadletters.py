"""The DLQ as an operator sees it: how many records it holds and why the newest got there.

Depth is the sum over partitions of (log end - log start): what retention still holds. Records
of aborted transactions and transaction markers are counted too, so it is an upper bound on the
records a reader would get (the Kafka tools count the same way). The reasons come from the DLQ
headers (`schemas.dlq`), read from the last records of each partition; values (payloads) are
never read into the result.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from schemas.dlq import RawHeaders, parse_dlq_headers

# Reasons are sentences naming what failed; a screen line shows this many characters of one.
REASON_SHOWN_CHARS = 200


@dataclass(frozen=True)
class DlqReason:
    """Why one DLQ record was dead-lettered and where it came from (no payload)."""

    partition: int
    offset: int
    at: datetime | None
    code: str
    reason: str
    origin_topic: str | None
    origin_partition: int | None
    origin_offset: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "at": self.at.isoformat() if self.at else None,
            "code": self.code,
            "reason": self.reason,
            "origin": (
                None
                if self.origin_topic is None
                else f"{self.origin_topic}[{self.origin_partition}]@{self.origin_offset}"
            ),
        }


@dataclass(frozen=True)
class DlqStatus:
    """The DLQ topic's depth per partition and its newest reasons, newest first."""

    topic: str
    depth_by_partition: Mapping[int, int] = field(default_factory=dict)
    newest: tuple[DlqReason, ...] = ()

    @property
    def depth(self) -> int:
        return sum(self.depth_by_partition.values())

    @property
    def newest_at(self) -> datetime | None:
        times = [r.at for r in self.newest if r.at is not None]
        return max(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "depth": self.depth,
            "partitions": {str(p): d for p, d in sorted(self.depth_by_partition.items())},
            "newest_at": self.newest_at.isoformat() if self.newest_at else None,
            "newest": [r.to_dict() for r in self.newest],
        }


def depth_by_partition(starts: Mapping[int, int], ends: Mapping[int, int]) -> dict[int, int]:
    """end - start per partition (never below 0: a start is read after its end on a busy
    partition whose retention moved meanwhile)."""
    return {p: max(0, ends[p] - starts.get(p, 0)) for p in sorted(ends)}


def one_line(text: str, limit: int = REASON_SHOWN_CHARS) -> str:
    """`text` on one line, cut to `limit` characters (an ellipsis marks the cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def reason_of(
    headers: RawHeaders, partition: int, offset: int, timestamp_ms: int | None
) -> DlqReason:
    """What a DLQ record's headers say; a record without complete DLQ headers is reported as
    such (code "unknown"), never by its content."""
    at = (
        datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
        if timestamp_ms is not None and timestamp_ms > 0
        else None
    )
    entry = parse_dlq_headers(headers)
    if entry is None:
        return DlqReason(
            partition, offset, at, "unknown", "no DLQ headers on this record", None, None, None
        )
    return DlqReason(
        partition=partition,
        offset=offset,
        at=at,
        code=entry.code,
        reason=one_line(entry.reason),
        origin_topic=entry.topic,
        origin_partition=entry.partition,
        origin_offset=entry.offset,
    )


def newest_first(reasons: Iterable[DlqReason], limit: int) -> tuple[DlqReason, ...]:
    """The `limit` newest reasons, by record time then partition and offset."""
    floor = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(reasons, key=lambda r: (r.at or floor, r.partition, r.offset), reverse=True)
    return tuple(ordered[:limit])


def read_tail_headers(
    consumer: Any,
    topic: str,
    starts: Mapping[int, int],
    ends: Mapping[int, int],
    per_partition: int,
    deadline: float,
) -> list[DlqReason]:
    """The reasons of the last `per_partition` records of each partition of `topic`, read with
    an assigned consumer (no group, nothing committed) until each partition's end or
    `deadline` (time.monotonic)."""
    assignment = []
    for p, end in ends.items():
        start = max(starts.get(p, 0), end - per_partition)
        if end > start:
            assignment.append(TopicPartition(topic, p, start))
    pending = {tp.partition: ends[tp.partition] for tp in assignment}
    if not pending:
        return []
    consumer.assign(assignment)
    found: list[DlqReason] = []
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(min(0.2, max(0.0, deadline - time.monotonic())))
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                pending.pop(msg.partition(), None)
            continue
        part, offset = msg.partition(), msg.offset()
        _, ts = msg.timestamp()
        found.append(reason_of(msg.headers(), part, offset, ts))
        if part in pending and offset + 1 >= pending[part]:
            del pending[part]
    return found
