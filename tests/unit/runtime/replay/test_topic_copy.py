from __future__ import annotations

from datetime import UTC, datetime

from runtime.replay.topic_copy import CopyRange, format_copy_plan, plan_copy, replay_headers
from schemas.topics import HEADER_REPLAY, HEADER_SOURCE


def test_replay_header_is_added_once_and_others_kept() -> None:
    headers = [(HEADER_SOURCE, b"web"), (HEADER_REPLAY, b"old[0]@1")]
    out = replay_headers(headers, "raw[2]@7")
    assert out == [(HEADER_SOURCE, b"web"), (HEADER_REPLAY, b"raw[2]@7")]
    assert replay_headers(None, "x[0]@0") == [(HEADER_REPLAY, b"x[0]@0")]


def test_plan_uses_time_index_bounds_and_partition_counts() -> None:
    bounds = {0: (0, 10), 1: (3, 8)}
    plan = plan_copy([1, 0], bounds, {0: 4, 1: -1}, {0: 7, 1: -1}, dest_partitions=2)
    assert plan == [CopyRange(0, 4, 7, 0), CopyRange(1, 8, 8, 1)]
    assert [r.count for r in plan] == [3, 0]
    # No end: up to the high watermark seen now; start below the log start is raised to it.
    open_ended = plan_copy([0, 1], bounds, {0: 2, 1: 0}, None, dest_partitions=6)
    assert open_ended == [CopyRange(0, 2, 10, None), CopyRange(1, 3, 8, None)]


def test_plan_table() -> None:
    plan = [CopyRange(0, 4, 7, 0), CopyRange(1, 2, 2, None)]
    text = format_copy_plan("a", "b", datetime(2024, 1, 1, tzinfo=UTC), None, plan)
    assert "copy a -> b" in text and "current end of the log" in text
    assert "by key" in text and text.endswith("up to 3 records")
