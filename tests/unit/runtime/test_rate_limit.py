"""The token bucket, as the edge uses it (refuse, then 429 until paid back) and as long jobs
do (take, then sleep until paid back)."""

from __future__ import annotations

import pytest

from runtime.rate_limit import RateLimiter, SourceRateLimiter, TokenBucket
from tests.unit.clock import ManualClock


def test_unlimited_never_waits() -> None:
    limiter = RateLimiter(None)
    assert all(limiter.delay_for(1000) == 0 for _ in range(10))


def test_average_rate_is_kept() -> None:
    clock = ManualClock(100.0)
    limiter = RateLimiter(100, burst=10, clock=clock, sleep=clock.sleep)
    for _ in range(1010):
        limiter.acquire()
    # 10 in the burst, 1000 more at 100/s.
    assert clock.now - 100.0 == pytest.approx(10.0, rel=0.01)


def test_idle_time_refills_only_up_to_the_burst() -> None:
    clock = ManualClock(100.0)
    limiter = RateLimiter(10, burst=5, clock=clock, sleep=clock.sleep)
    clock.now += 3600
    assert limiter.delay_for(5) == 0
    assert limiter.delay_for(1) == pytest.approx(0.1)


def test_admit_refuses_without_taking_and_take_overdraws() -> None:
    bucket = TokenBucket(rate=10.0, capacity=5.0, tokens=5.0, updated=0.0)
    assert bucket.admit(3, now=0.0) is None and bucket.tokens == 2.0
    assert bucket.admit(3, now=0.0) == pytest.approx(0.1) and bucket.tokens == 2.0
    assert bucket.take(3, now=0.0) == pytest.approx(0.1) and bucket.tokens == -1.0
    assert bucket.admit(50, now=1.0) is None and bucket.tokens == -45.0  # full, then overdrawn


# The edge: per-source buckets that a request may overdraw, then 429 until paid back.


def test_off_by_default_and_for_sources_without_a_rate() -> None:
    assert not SourceRateLimiter({}).enabled
    limiter = SourceRateLimiter({"web": 10.0})
    assert limiter.enabled and limiter.retry_after("app", 10_000) is None


def test_a_source_over_its_rate_waits_until_its_debt_is_paid() -> None:
    clock = ManualClock(100.0)
    limiter = SourceRateLimiter({"web": 100.0}, burst_s=1.0, clock=clock)
    assert limiter.retry_after("web", 100) is None  # the full bucket
    assert limiter.retry_after("web", 1) == 1  # empty: wait
    clock.now += 0.5
    assert limiter.retry_after("web", 60) == 1  # 50 tokens, 60 needed
    clock.now += 0.5
    assert limiter.retry_after("web", 250) is None  # a full bucket lets a bigger batch in
    assert limiter.retry_after("web", 1) == 2  # 150 tokens of debt at 100/s
    clock.now += 1.5
    assert limiter.retry_after("web", 1) == 1
    clock.now += 0.02
    assert limiter.retry_after("web", 1) is None


def test_default_rate_applies_per_source_separately() -> None:
    clock = ManualClock(100.0)
    limiter = SourceRateLimiter({}, default_rate=5.0, burst_s=2.0, clock=clock)
    assert limiter.retry_after("a", 10) is None
    assert limiter.retry_after("a", 1) == 1
    assert limiter.retry_after("b", 10) is None


def test_long_run_rate_is_the_configured_one() -> None:
    clock = ManualClock(100.0)
    limiter = SourceRateLimiter({"web": 50.0}, clock=clock)
    accepted = 0
    for _ in range(1000):  # 10 s of 100-event requests every 10 ms
        if limiter.retry_after("web", 100) is None:
            accepted += 100
        clock.now += 0.01
    assert 450 <= accepted <= 650
