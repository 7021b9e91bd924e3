"""Consumer-group lag, computed as Kafka's ``kafka-consumer-groups.sh --describe`` does.

Per partition: lag = log end offset (the high watermark, read uncommitted as the tool reads it)
minus the group's committed offset. The partitions of a group are those it has committed an
offset for plus those assigned to its members. A partition with no committed offset (a member
holds it but has not committed yet) has an unknown lag: the tool prints "-", we report None and
leave it out of the totals, counting such partitions apart (`GroupLag.uncommitted`).

`partition_lags` and `GroupLag` are the arithmetic (no I/O); `read_group_lag` asks the broker
through confluent-kafka's AdminClient: three requests per group whatever its partition count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
)
from confluent_kafka.admin import AdminClient

from runtime.group_offsets import read_end_offsets, result
from schemas.topics import PartitionKey

# librdkafka's "no offset" (OFFSET_INVALID, -1001) and any other negative offset: not committed.
NO_OFFSET = -1


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a group: committed offset (None: none), log end offset, lag."""

    topic: str
    partition: int
    committed: int | None
    end: int | None
    member: str | None = None

    @property
    def lag(self) -> int | None:
        """end - committed, as the Kafka tool computes it; None when either is unknown."""
        if self.committed is None or self.end is None:
            return None
        return self.end - self.committed

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
            "member": self.member,
        }


@dataclass(frozen=True)
class GroupLag:
    """A consumer group's state, members and per-partition lag."""

    group: str
    state: str
    members: int
    partitions: tuple[PartitionLag, ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        """Lag summed over the partitions whose lag is known."""
        return sum(p.lag for p in self.partitions if p.lag is not None)

    @property
    def uncommitted(self) -> int:
        """Partitions with no committed offset (lag unknown)."""
        return sum(1 for p in self.partitions if p.committed is None)

    def by_topic(self) -> dict[str, int]:
        """Known lag summed per topic, topics in name order."""
        out: dict[str, int] = {}
        for p in sorted(self.partitions, key=lambda p: (p.topic, p.partition)):
            out[p.topic] = out.get(p.topic, 0) + (p.lag or 0)
        return out

    def to_dict(self) -> dict[str, Any]:
        topics: dict[str, list[PartitionLag]] = {}
        for p in sorted(self.partitions, key=lambda p: (p.topic, p.partition)):
            topics.setdefault(p.topic, []).append(p)
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "lag": self.total,
            "uncommitted_partitions": self.uncommitted,
            "topics": [
                {
                    "topic": topic,
                    "lag": sum(p.lag or 0 for p in parts),
                    "partitions": [p.to_dict() for p in parts],
                }
                for topic, parts in topics.items()
            ],
        }


def partition_lags(
    committed: Mapping[PartitionKey, int | None],
    assigned: Mapping[PartitionKey, str],
    ends: Mapping[PartitionKey, int],
) -> tuple[PartitionLag, ...]:
    """Every partition committed to or assigned (member id from `assigned`), sorted; a negative
    committed offset counts as none."""
    keys = sorted(set(committed) | set(assigned))
    out = []
    for key in keys:
        offset = committed.get(key)
        out.append(
            PartitionLag(
                topic=key[0],
                partition=key[1],
                committed=offset if offset is not None and offset >= 0 else None,
                end=ends.get(key),
                member=assigned.get(key),
            )
        )
    return tuple(out)


def read_group_lag(admin: AdminClient, group: str, timeout_s: float) -> GroupLag:
    """The group's lag as the Kafka tool would describe it. A group Kafka does not know comes
    back with state "missing" and no partitions."""
    try:
        description = result(
            admin.describe_consumer_groups([group], request_timeout=timeout_s)[group], timeout_s
        )
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.GROUP_ID_NOT_FOUND:
            return GroupLag(group, "missing", 0)
        raise
    assigned: dict[PartitionKey, str] = {}
    for member in description.members:
        assignment = member.assignment
        for tp in assignment.topic_partitions if assignment is not None else ():
            assigned[(tp.topic, tp.partition)] = str(member.member_id)
    request = [ConsumerGroupTopicPartitions(group)]
    offsets = result(
        admin.list_consumer_group_offsets(request, request_timeout=timeout_s)[group], timeout_s
    )
    committed: dict[PartitionKey, int | None] = {
        (tp.topic, tp.partition): int(tp.offset) for tp in offsets.topic_partitions or ()
    }
    state = description.state.name.lower()
    if not committed and not assigned and state in ("dead", "unknown"):
        return GroupLag(group, "missing", 0)
    ends = read_end_offsets(admin, set(committed) | set(assigned), timeout_s)
    return GroupLag(
        group=group,
        state=state,
        members=len(description.members),
        partitions=partition_lags(committed, assigned, ends),
    )
