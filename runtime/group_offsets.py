"""Offsets of topic partitions and of a consumer group's commits, asked of the broker through
confluent-kafka's AdminClient (one request each, whatever the partition count)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from schemas.topics import PartitionKey


def result(future: Any, timeout_s: float) -> Any:
    return future.result(timeout=timeout_s)


def read_end_offsets(
    admin: AdminClient, keys: Iterable[PartitionKey], timeout_s: float, *, earliest: bool = False
) -> dict[PartitionKey, int]:
    """Log end offsets (or log start offsets with `earliest`) of `keys`, in one request."""
    spec = OffsetSpec.earliest() if earliest else OffsetSpec.latest()
    request = {TopicPartition(t, p): spec for t, p in keys}
    if not request:
        return {}
    futures = admin.list_offsets(
        request, isolation_level=IsolationLevel.READ_UNCOMMITTED, request_timeout=timeout_s
    )
    return {(tp.topic, tp.partition): int(result(f, timeout_s).offset) for tp, f in futures.items()}


def read_committed_offsets(
    admin: AdminClient, group: str, keys: Iterable[PartitionKey], timeout_s: float
) -> dict[PartitionKey, int | None]:
    """The group's committed offsets of `keys` (None: nothing committed), in one request."""
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in keys])]
    offsets = result(
        admin.list_consumer_group_offsets(request, request_timeout=timeout_s)[group], timeout_s
    )
    return {
        (tp.topic, tp.partition): int(tp.offset) if tp.offset >= 0 else None
        for tp in offsets.topic_partitions or ()
    }
