"""Reset a consumer group's committed offsets to a timestamp, an offset, earliest or latest.

The plan is pure (:func:`plan_resets`): given the partitions, their log bounds, the group's
committed offsets and, for a timestamp, the first offset at or after it, it says where each
partition moves. :class:`GroupOffsets` gathers those facts through the AdminClient and applies a
plan with ``AlterConsumerGroupOffsets``.

Kafka refuses to move the offsets of a group that has live members (a live member would
overwrite them on its next commit anyway), so :meth:`GroupOffsets.apply` refuses first, naming
the members. With ``force`` it skips that check and keeps retrying until the broker accepts,
which is what an operator needs after killing consumers whose sessions have not expired yet.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from runtime.kafka_config import admin_config
from runtime.settings import KafkaSettings
from schemas.errors import FatalError, RetryableError
from schemas.topics import PartitionKey

logger = logging.getLogger(__name__)

TargetKind = Literal["timestamp", "offset", "earliest", "latest"]

# Broker answers to an offset change of a group that still has members.
_BUSY_CODES = {
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.FENCED_INSTANCE_ID,
}


class GroupBusyError(FatalError):
    """The group has live members, so its offsets cannot be moved now."""

    def __init__(self, group: str, members: list[str]) -> None:
        shown = ", ".join(members[:5]) + (" ..." if len(members) > 5 else "")
        super().__init__(
            f"consumer group {group} has {len(members)} live member(s) ({shown}): stop its "
            "consumers (scale to zero) and retry, or pass --force to wait for their sessions "
            "to expire"
        )
        self.group = group
        self.members = members


@dataclass(frozen=True)
class ResetTarget:
    """Where to move: a timestamp (aware datetime), an absolute offset, earliest or latest."""

    kind: TargetKind
    timestamp: datetime | None = None
    offset: int | None = None

    @classmethod
    def at_timestamp(cls, when: datetime) -> ResetTarget:
        if when.tzinfo is None:
            raise ValueError("the reset timestamp must carry a time zone (e.g. ...Z)")
        return cls("timestamp", timestamp=when.astimezone(UTC))

    @classmethod
    def at_offset(cls, offset: int) -> ResetTarget:
        if offset < 0:
            raise ValueError("the reset offset must be >= 0")
        return cls("offset", offset=offset)

    @property
    def timestamp_ms(self) -> int:
        if self.timestamp is None:
            raise ValueError("not a timestamp target")
        return int(self.timestamp.timestamp() * 1000)

    def describe(self) -> str:
        if self.kind == "timestamp" and self.timestamp is not None:
            return f"first record at or after {self.timestamp.isoformat()}"
        if self.kind == "offset":
            return f"offset {self.offset}"
        return f"{self.kind} offset"


@dataclass(frozen=True)
class PartitionReset:
    """One line of a plan: a partition, where the group is and where it will be."""

    topic: str
    partition: int
    current: int | None
    target: int
    low: int
    high: int
    clamped: bool = False

    @property
    def change(self) -> int | None:
        """Records the group will re-read (positive) or skip (negative); None if never committed."""
        return None if self.current is None else self.current - self.target

    @property
    def lag_after(self) -> int:
        return self.high - self.target


def parse_partition_spec(spec: str) -> tuple[str, list[int] | None]:
    """``topic`` (every partition) or ``topic:0,2,5`` (those partitions)."""
    topic, sep, parts = spec.rpartition(":")
    if not sep:
        return spec, None
    if not topic:
        raise ValueError(f"no topic name in {spec!r}")
    try:
        numbers = sorted({int(p) for p in parts.split(",") if p.strip()})
    except ValueError as exc:
        raise ValueError(f"partitions of {spec!r} must be integers, e.g. topic:0,1") from exc
    if not numbers or numbers[0] < 0:
        raise ValueError(f"partitions of {spec!r} must be integers >= 0, e.g. topic:0,1")
    return topic, numbers


def plan_resets(
    partitions: list[PartitionKey],
    target: ResetTarget,
    bounds: dict[PartitionKey, tuple[int, int]],
    committed: dict[PartitionKey, int | None],
    by_time: dict[PartitionKey, int] | None = None,
) -> list[PartitionReset]:
    """Where each partition moves. Offsets outside the log are clamped into [low, high].

    For a timestamp, ``by_time`` holds the first offset at or after it (-1 when every record is
    older, which moves the group to the end of the log).
    """
    plan: list[PartitionReset] = []
    for key in sorted(partitions):
        low, high = bounds[key]
        if target.kind == "earliest":
            wanted = low
        elif target.kind == "latest":
            wanted = high
        elif target.kind == "offset":
            wanted = int(target.offset or 0)
        else:
            found = (by_time or {}).get(key, -1)
            wanted = high if found is None or found < 0 else found
        clamped_to = min(max(wanted, low), high)
        plan.append(
            PartitionReset(
                topic=key[0],
                partition=key[1],
                current=committed.get(key),
                target=clamped_to,
                low=low,
                high=high,
                clamped=clamped_to != wanted,
            )
        )
    return plan


def format_reset_plan(group: str, target: ResetTarget, plan: list[PartitionReset]) -> str:
    """A table an operator can read before saying yes."""
    lines = [
        f"consumer group {group}: reset to {target.describe()}",
        f"{'TOPIC':<40} {'PART':>4} {'CURRENT':>10} {'TARGET':>10} "
        f"{'RE-READ':>9} {'LAG AFTER':>10}",
    ]
    for row in plan:
        current = "-" if row.current is None else str(row.current)
        change = "-" if row.change is None else str(row.change)
        note = "  (clamped to the log)" if row.clamped else ""
        lines.append(
            f"{row.topic:<40} {row.partition:>4} {current:>10} {row.target:>10} "
            f"{change:>9} {row.lag_after:>10}{note}"
        )
    rereads = sum(r.change for r in plan if r.change is not None and r.change > 0)
    lines.append(f"{len(plan)} partitions, {rereads} records to re-read")
    return "\n".join(lines)


class GroupOffsets:
    """The facts a reset needs, read from the cluster, and the reset itself."""

    def __init__(self, kafka: KafkaSettings, group: str, *, timeout_s: float = 30.0) -> None:
        self.group = group
        self._timeout_s = timeout_s
        self._admin = AdminClient(admin_config(kafka, "replay"))

    def resolve(self, specs: list[tuple[str, list[int] | None]]) -> list[PartitionKey]:
        """The partitions named by the specs; unknown topics or partitions are an error."""
        try:
            metadata = self._admin.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            raise RetryableError(f"cannot read cluster metadata: {exc}") from exc
        out: list[PartitionKey] = []
        for topic, wanted in specs:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                raise FatalError(f"topic {topic} does not exist")
            present = sorted(meta.partitions)
            for p in wanted if wanted is not None else present:
                if p not in meta.partitions:
                    raise FatalError(f"topic {topic} has no partition {p} (it has {len(present)})")
                out.append((topic, p))
        return sorted(set(out))

    def live_members(self) -> list[str]:
        """Live members of the group, as `client_id@host (member_id)`."""
        future = self._admin.describe_consumer_groups([self.group])[self.group]
        try:
            description = future.result(timeout=self._timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
                return []
            raise RetryableError(f"cannot describe consumer group {self.group}: {exc}") from exc
        return [f"{m.client_id}@{m.host} ({m.member_id})" for m in description.members]

    def bounds(self, keys: list[PartitionKey]) -> dict[PartitionKey, tuple[int, int]]:
        """(low watermark, high watermark) of each partition."""
        low = self._list_offsets(keys, OffsetSpec.earliest())
        high = self._list_offsets(keys, OffsetSpec.latest())
        return {k: (low[k], high[k]) for k in keys}

    def offsets_for_time(self, keys: list[PartitionKey], when_ms: int) -> dict[PartitionKey, int]:
        """First offset whose timestamp is >= when_ms, -1 where every record is older."""
        return self._list_offsets(keys, OffsetSpec.for_timestamp(when_ms))

    def committed(self, keys: list[PartitionKey]) -> dict[PartitionKey, int | None]:
        request = ConsumerGroupTopicPartitions(self.group, [TopicPartition(t, p) for t, p in keys])
        future = self._admin.list_consumer_group_offsets([request])[self.group]
        try:
            result = future.result(timeout=self._timeout_s)
        except KafkaException as exc:
            raise RetryableError(f"cannot read offsets of group {self.group}: {exc}") from exc
        out: dict[PartitionKey, int | None] = {}
        for tp in result.topic_partitions or []:
            out[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        return out

    def plan(self, keys: list[PartitionKey], target: ResetTarget) -> list[PartitionReset]:
        by_time = None
        if target.kind == "timestamp":
            by_time = self.offsets_for_time(keys, target.timestamp_ms)
        return plan_resets(keys, target, self.bounds(keys), self.committed(keys), by_time)

    def apply(
        self, plan: list[PartitionReset], *, force: bool = False, wait_s: float = 60.0
    ) -> None:
        """Commit the plan's targets for the group.

        Without force, a group with live members is refused before anything is sent. With
        force, the reset is retried until the broker accepts it (the members left or their
        sessions expired) or ``wait_s`` passes.
        """
        if not plan:
            return
        if not force:
            members = self.live_members()
            if members:
                raise GroupBusyError(self.group, members)
        deadline = time.monotonic() + (wait_s if force else 0.0)
        delay = 0.5
        while True:
            busy = self._alter(plan)
            if not busy:
                logger.info("reset %d partitions of group %s", len(plan), self.group)
                return
            if time.monotonic() >= deadline:
                raise GroupBusyError(self.group, self.live_members() or ["(rebalancing)"])
            logger.info("group %s still has members; retrying the reset", self.group)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 5.0)

    def _alter(self, plan: list[PartitionReset]) -> bool:
        """Send the reset; True when the broker refused because the group is busy."""
        request = ConsumerGroupTopicPartitions(
            self.group, [TopicPartition(r.topic, r.partition, r.target) for r in plan]
        )
        future = self._admin.alter_consumer_group_offsets([request])[self.group]
        try:
            result = future.result(timeout=self._timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() in _BUSY_CODES:
                return True
            raise RetryableError(f"resetting offsets of group {self.group}: {exc}") from exc
        errors = [tp.error for tp in result.topic_partitions or [] if tp.error is not None]
        if not errors:
            return False
        if all(e.code() in _BUSY_CODES for e in errors):
            return True
        raise FatalError(f"resetting offsets of group {self.group}: {errors[0]}")

    def _list_offsets(self, keys: list[PartitionKey], spec: OffsetSpec) -> dict[PartitionKey, int]:
        request = {TopicPartition(t, p): spec for t, p in keys}
        futures = self._admin.list_offsets(request, request_timeout=self._timeout_s)
        out: dict[PartitionKey, int] = {}
        for tp, future in futures.items():
            try:
                out[(tp.topic, tp.partition)] = int(future.result(timeout=self._timeout_s).offset)
            except KafkaException as exc:
                raise RetryableError(
                    f"listing offsets of {tp.topic}[{tp.partition}]: {exc}"
                ) from exc
        return out
