"""A token-bucket rate limit for long operator jobs (backfill, replay copies)."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """At most ``rate`` units a second on average, with bursts up to ``burst`` units.

    ``rate`` of None or <= 0 means unlimited. The clock and the sleep are injectable so the
    arithmetic is tested without waiting.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate if rate and rate > 0 else None
        self.burst = burst if burst is not None else max(1.0, (self.rate or 1.0) / 10)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    def delay_for(self, units: float) -> float:
        """Take `units` and return how long the caller must wait first (0 when within budget)."""
        if self.rate is None:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= units
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

    def acquire(self, units: float = 1.0) -> None:
        """Block until `units` fit in the budget."""
        wait = self.delay_for(units)
        if wait > 0:
            self._sleep(wait)
