"""Replay for SREs: move a consumer group's offsets, or copy a time range between topics.

``offset_reset`` plans and applies a reset of a group's committed offsets to a timestamp, an
offset, the earliest or the latest record; ``topic_copy`` copies a time range of one topic into
another (raw into raw, to reprocess after a processor fix), keeping keys, headers and timestamps.
Both are pure Kafka admin and client work: no segflow component needs to run.
"""

from runtime.replay.offset_reset import (
    GroupBusyError,
    GroupOffsets,
    PartitionReset,
    ResetTarget,
    format_reset_plan,
    parse_partition_spec,
    plan_resets,
)
from runtime.replay.topic_copy import (
    CopyRange,
    CopyStats,
    TopicCopier,
    format_copy_plan,
    plan_copy,
    replay_headers,
)

__all__ = [
    "CopyRange",
    "CopyStats",
    "GroupBusyError",
    "GroupOffsets",
    "PartitionReset",
    "ResetTarget",
    "TopicCopier",
    "format_copy_plan",
    "format_reset_plan",
    "parse_partition_spec",
    "plan_copy",
    "plan_resets",
    "replay_headers",
]
