"""When the consumer's loop prepares the next flush ahead, and how long it waits in consume()."""

from __future__ import annotations

import pytest

from sinks.snowflake.flushing import IDLE_POLL_S, IN_FLIGHT_POLL_S, MIN_POLL_S, FlushPacer


def test_without_a_measured_flush_the_next_one_is_prepared_at_once() -> None:
    assert FlushPacer().prepare_due(0.0)


def test_the_next_flush_is_prepared_as_late_as_still_ends_before_the_flush_in_flight() -> None:
    pacer = FlushPacer()
    pacer.flushed(2.0)
    pacer.prepared(0.3)
    # expected end at 2.0 s: prepare when 2 preparations and a poll are left, at 1.35 s
    assert not pacer.prepare_due(1.0)
    assert not pacer.prepare_due(1.34)
    assert pacer.prepare_due(1.36)
    assert pacer.prepare_due(5.0)  # a flush slower than expected


def test_a_flush_in_flight_that_prepares_itself_is_expected_a_preparation_later() -> None:
    pacer = FlushPacer()
    pacer.flushed(2.0)
    pacer.prepared(0.3)
    # expected end at 2.3 s: prepare at 1.65 s
    assert not pacer.prepare_due(1.36, prepares_itself=True)
    assert not pacer.prepare_due(1.64, prepares_itself=True)
    assert pacer.prepare_due(1.66, prepares_itself=True)


def test_the_estimates_follow_the_recent_durations() -> None:
    pacer = FlushPacer()
    pacer.flushed(2.0)
    for _ in range(20):
        pacer.flushed(1.0)
    assert pacer.flush_s == pytest.approx(1.0, abs=0.01)
    pacer.flushed(3.0)  # one slow flush moves the estimate part of the way
    assert pacer.flush_s is not None and 1.0 < pacer.flush_s < 2.0


def test_poll_bounds() -> None:
    assert MIN_POLL_S < IN_FLIGHT_POLL_S < IDLE_POLL_S
