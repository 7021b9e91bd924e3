"""Per-source token buckets that a request may overdraw, then 429 until paid back."""

from __future__ import annotations

from ingest.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_by_default_and_for_sources_without_a_rate() -> None:
    assert not RateLimiter({}).enabled
    limiter = RateLimiter({"web": 10.0})
    assert limiter.enabled and limiter.retry_after("app", 10_000) is None


def test_a_source_over_its_rate_waits_until_its_debt_is_paid() -> None:
    clock = Clock()
    limiter = RateLimiter({"web": 100.0}, burst_s=1.0, clock=clock)
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
    clock = Clock()
    limiter = RateLimiter({}, default_rate=5.0, burst_s=2.0, clock=clock)
    assert limiter.retry_after("a", 10) is None
    assert limiter.retry_after("a", 1) == 1
    assert limiter.retry_after("b", 10) is None


def test_long_run_rate_is_the_configured_one() -> None:
    clock = Clock()
    limiter = RateLimiter({"web": 50.0}, clock=clock)
    accepted = 0
    for _ in range(1000):  # 10 s of 100-event requests every 10 ms
        if limiter.retry_after("web", 100) is None:
            accepted += 100
        clock.now += 0.01
    assert 450 <= accepted <= 650
