"""Per-partition progress of the sink: each transition where it is allowed, and a loud refusal
where it is not (progress.py)."""

from __future__ import annotations

import pytest

from sinks.snowflake.progress import (
    PartitionProgress,
    PartitionState,
    Progress,
    ProgressError,
)

T = "segment.events.track"
P0 = (T, 0)
P1 = (T, 1)


def fetching(stored: int = 10) -> PartitionProgress:
    return PartitionProgress.assign(T, 0, stored)


def test_a_flush_moves_the_stored_offset_to_where_it_ends() -> None:
    part = fetching(10)
    part.hand_to_flush(10, 15)
    assert part.in_flight == 15 and part.stored == 10
    part.loaded(10, 15)
    assert part.stored == 15 and part.in_flight is None
    part.hand_to_flush(15, 16)  # the next flush expects what this one committed


def test_a_flush_loaded_in_parts_chains_its_offsets() -> None:
    part = fetching(10)
    part.hand_to_flush(10, 18)
    part.loaded(10, 14)
    assert part.stored == 14 and part.in_flight == 18
    with pytest.raises(ProgressError):
        part.loaded(10, 16)  # a part that does not start where the last one ended
    part.loaded(14, 18)
    assert part.in_flight is None


@pytest.mark.parametrize(
    ("expected", "new"),
    [(9, 15), (11, 15), (10, 10)],
    ids=["behind the warehouse", "ahead of the warehouse", "moves nothing"],
)
def test_a_flush_that_does_not_start_at_the_stored_offset_is_refused(
    expected: int, new: int
) -> None:
    part = fetching(10)
    with pytest.raises(ProgressError, match=r"segment.events.track\[0\]"):
        part.hand_to_flush(expected, new)
    assert part.in_flight is None


def test_one_flush_at_a_time_per_partition() -> None:
    part = fetching(10)
    part.hand_to_flush(10, 12)
    with pytest.raises(ProgressError, match="while a flush"):
        part.hand_to_flush(12, 14)


def test_loaded_without_a_flush_or_beyond_it_is_refused() -> None:
    part = fetching(10)
    with pytest.raises(ProgressError):
        part.loaded(10, 12)
    part.hand_to_flush(10, 12)
    with pytest.raises(ProgressError):
        part.loaded(10, 13)


def test_an_abandoned_flush_waits_for_a_reseek_and_holds_nothing() -> None:
    part = fetching(10)
    part.hand_to_flush(10, 12)
    part.abandon()
    assert part.state is PartitionState.RESEEK and part.in_flight is None
    assert part.assigned and not part.loadable
    with pytest.raises(ProgressError, match="while reseek"):
        part.hand_to_flush(10, 12)
    with pytest.raises(ProgressError):
        part.loaded(10, 12)
    part.reseek()
    part.resume(20)  # the warehouse says where it stands now
    assert part.state is PartitionState.FETCHING and part.stored == 20 and part.resought
    part.new_poll()
    assert not part.resought


def test_resume_only_after_a_reseek() -> None:
    with pytest.raises(ProgressError, match="resume while fetching"):
        fetching().resume(5)


def test_a_reseek_while_stopping_parks_the_partition() -> None:
    part = fetching(10)
    part.reseek()
    part.resume(None)
    assert part.state is PartitionState.PARKED and part.assigned and not part.loadable
    with pytest.raises(ProgressError):
        part.hand_to_flush(10, 12)


@pytest.mark.parametrize("release", ["revoke", "lose"])
def test_a_released_partition_takes_no_transition_but_a_new_assignment(release: str) -> None:
    part = fetching(10)
    part.hand_to_flush(10, 12)
    getattr(part, release)()
    assert part.released and part.in_flight is None
    for attempt in (
        lambda: part.loaded(10, 12),
        lambda: part.hand_to_flush(10, 12),
        part.abandon,
        part.reseek,
        part.revoke,
        part.lose,
    ):
        with pytest.raises(ProgressError):
            attempt()


def test_the_registry_tracks_assignment_release_and_reassignment() -> None:
    progress = Progress()
    progress.assign(P0, 10)
    progress.assign(P1, None)
    assert progress.assigned() == {P0, P1}
    assert progress.loadable([P0, P1]) == {P0}  # a parked partition buffers nothing
    with pytest.raises(ProgressError, match="assigned already"):
        progress.assign(P0, 10)
    progress.release(P0, PartitionState.REVOKED)
    progress.release(P1, PartitionState.LOST)
    progress.release((T, 7), PartitionState.REVOKED)  # one never held: released all the same
    assert progress.released() == {P0, P1, (T, 7)} and not progress.assigned()
    progress.release(P0, PartitionState.LOST)  # released twice: still released
    progress.assign(P0, 30)  # assigned again: a new ownership
    assert progress[P0].stored == 30 and progress[P0].state is PartitionState.FETCHING
    progress.forget_released()
    assert progress.released() == set() and progress.get(P1) is None


def test_the_registry_moves_a_whole_flush_and_skips_released_partitions() -> None:
    progress = Progress()
    progress.assign(P0, 10)
    progress.assign(P1, -1)
    progress.hand_to_flush([(T, 0, 10, 12), (T, 1, -1, 3)])
    progress.release(P1, PartitionState.REVOKED)
    progress.loaded([(T, 0, 10, 12), (T, 1, -1, 3)])
    assert progress[P0].stored == 12 and progress[P1].stored == -1  # not moved once released
    with pytest.raises(ProgressError, match="never assigned"):
        progress.hand_to_flush([(T, 9, 0, 1)])


def test_pending_reseeks_and_stale_records() -> None:
    progress = Progress()
    for tp in (P1, P0):
        progress.assign(tp, 0)
    progress.abandon([P1, P0, (T, 5)])  # one not held is ignored
    assert progress.pending_reseeks() == [P0, P1]
    progress[P0].reseek()
    progress[P0].resume(4)
    assert progress.skips(P0) and not progress.skips(P1) and not progress.skips((T, 5))
    progress.new_poll()
    assert not progress.skips(P0)
    assert progress.pending_reseeks() == [P1]
