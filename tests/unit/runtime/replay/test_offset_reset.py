from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from runtime.replay.offset_reset import (
    GroupBusyError,
    ResetTarget,
    format_reset_plan,
    parse_partition_spec,
    plan_resets,
)

KEYS = [("t", 1), ("t", 0)]
BOUNDS = {("t", 0): (5, 100), ("t", 1): (0, 40)}


def test_partition_spec() -> None:
    assert parse_partition_spec("segment.raw.track") == ("segment.raw.track", None)
    assert parse_partition_spec("a.b:3,1,1") == ("a.b", [1, 3])
    for bad in ("t:x", ":1", "t:", "t:-1"):
        with pytest.raises(ValueError):
            parse_partition_spec(bad)


def test_earliest_latest_and_offset_are_clamped_into_the_log() -> None:
    committed = {("t", 0): 50, ("t", 1): None}
    earliest = plan_resets(KEYS, ResetTarget("earliest"), BOUNDS, committed)
    assert [(r.partition, r.target, r.current) for r in earliest] == [(0, 5, 50), (1, 0, None)]
    assert earliest[0].change == 45 and earliest[1].change is None
    latest = plan_resets(KEYS, ResetTarget("latest"), BOUNDS, committed)
    assert [r.target for r in latest] == [100, 40]
    assert all(r.lag_after == 0 for r in latest)
    by_offset = plan_resets(KEYS, ResetTarget.at_offset(60), BOUNDS, committed)
    assert [(r.target, r.clamped) for r in by_offset] == [(60, False), (40, True)]
    low = plan_resets(KEYS, ResetTarget.at_offset(1), BOUNDS, committed)
    assert [(r.target, r.clamped) for r in low] == [(5, True), (1, False)]


def test_timestamp_uses_the_time_index_and_minus_one_means_end() -> None:
    target = ResetTarget.at_timestamp(datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert target.timestamp == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert target.timestamp_ms == 1714557600000
    plan = plan_resets(KEYS, target, BOUNDS, {}, {("t", 0): 70, ("t", 1): -1})
    assert [r.target for r in plan] == [70, 40]


def test_targets_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        ResetTarget.at_timestamp(datetime(2024, 5, 1))
    with pytest.raises(ValueError):
        ResetTarget.at_offset(-3)


def test_plan_table_counts_rereads() -> None:
    plan = plan_resets(KEYS, ResetTarget("earliest"), BOUNDS, {("t", 0): 50, ("t", 1): 10})
    text = format_reset_plan("g1", ResetTarget("earliest"), plan)
    assert "consumer group g1: reset to earliest offset" in text
    assert "55 records to re-read" in text
    assert len(text.splitlines()) == 2 + 2 + 1


def test_busy_error_names_members_and_the_way_out() -> None:
    err = GroupBusyError("g", [f"m{i}" for i in range(7)])
    assert "7 live member(s)" in str(err) and "m4 ..." in str(err) and "--force" in str(err)
