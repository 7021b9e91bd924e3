"""sink_progress.py: which sink partitions are behind the suppression's data ends, the wait."""

from __future__ import annotations

import pytest

from deletion.sink_progress import SinkBarrierError, behind, groups_to_wait_for, wait_for_sinks
from tests.unit.clock import ManualClock

ENDS = {("e.track", 0): 10, ("e.track", 1): 0, ("identity", 0): 4}


def test_behind_below_the_end_or_without_a_row_empty_partitions_need_nothing() -> None:
    stored = {"sink": {("e.track", 0): 10, ("identity", 0): 3}, "other": {("e.track", 0): -1}}
    lags = behind(ENDS, stored, ["sink", "other"])
    assert [(lag.group, lag.topic, lag.partition, lag.stored) for lag in lags] == [
        ("sink", "identity", 0, 3),
        ("other", "e.track", 0, -1),
        ("other", "identity", 0, None),  # no row: not loaded yet
    ]
    assert "nothing loaded" in lags[2].describe() and "needs 4" in lags[2].describe()
    assert behind(ENDS, {"sink": {("e.track", 0): 12, ("identity", 0): 4}}, ["sink"]) == []


def test_groups_are_the_given_ones_else_those_loading_the_topics() -> None:
    stored = {"sink": {("e.track", 0): 1}, "replay-old": {("elsewhere", 0): 1}}
    assert groups_to_wait_for([], stored, ["e.track", "identity"]) == ["sink"]
    assert groups_to_wait_for(["b", "a", "b"], stored, ["e.track"]) == ["b", "a"]


def test_wait_returns_once_every_group_passed_with_progress_lines() -> None:
    clock = ManualClock()
    said: list[str] = []
    reads = iter([{"sink": {("e.track", 0): 2, ("identity", 0): 4}}] * 25)

    def read() -> dict[str, dict[tuple[str, int], int]]:
        return next(reads, {"sink": {("e.track", 0): 10, ("identity", 0): 4}})

    groups = wait_for_sinks(
        read, ENDS, [], timeout_s=60, poll_s=1, report_every_s=10, say=said.append,
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    assert groups == ["sink"]
    assert len(said) == 2 and all("1 partitions behind" in s for s in said)
    assert clock.now == 25


def test_wait_times_out_naming_the_partitions_behind() -> None:
    clock = ManualClock()
    with pytest.raises(SinkBarrierError) as err:
        wait_for_sinks(
            lambda: {"sink": {("e.track", 0): 3}}, ENDS, [], timeout_s=5, say=lambda s: None,
            clock=clock, sleep=clock.sleep,
        )  # fmt: skip
    text = str(err.value)
    assert "e.track[0] at 3, needs 10" in text and "identity[0] nothing loaded" in text
    assert "--forget-sink-groups" in text and "run the same forget again" in text
    assert clock.now == 5


def test_no_sink_group_at_all_is_nothing_to_wait_for() -> None:
    said: list[str] = []
    assert wait_for_sinks(lambda: {}, ENDS, [], timeout_s=5, say=said.append) == []
    assert said == ["no sink group has loaded these topics: nothing to wait for"]
