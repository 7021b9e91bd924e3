from __future__ import annotations

import pytest

from runtime.rate_limit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_unlimited_never_waits() -> None:
    limiter = RateLimiter(None)
    assert all(limiter.delay_for(1000) == 0 for _ in range(10))


def test_average_rate_is_kept() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, burst=10, clock=clock, sleep=clock.sleep)
    for _ in range(1010):
        limiter.acquire()
    # 10 in the burst, 1000 more at 100/s.
    assert clock.now - 100.0 == pytest.approx(10.0, rel=0.01)


def test_idle_time_refills_only_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, burst=5, clock=clock, sleep=clock.sleep)
    clock.now += 3600
    assert limiter.delay_for(5) == 0
    assert limiter.delay_for(1) == pytest.approx(0.1)
