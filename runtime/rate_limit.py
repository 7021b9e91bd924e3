"""Rate limits: one token bucket, used two ways.

`TokenBucket` holds up to ``capacity`` tokens, refilled at ``rate`` a second, and may be
overdrawn (its tokens go below zero); the long-run rate is the configured one either way.

- The edge refuses (`SourceRateLimiter`): a bucket per source, holding ``rate * burst_s``
  tokens. A request of n events needs min(n, bucket size) tokens and takes n, possibly going
  below zero, so a batch larger than the bucket is not refused forever; otherwise it gets 429
  with Retry-After = the whole seconds until enough tokens are back.
- Long operator jobs wait (`RateLimiter`: backfill, replay copies): every unit is taken, and the
  caller sleeps until the debt is paid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``rate`` tokens a second up to ``capacity``; ``tokens`` as of the clock time ``updated``."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def admit(self, n: float, now: float) -> float | None:
        """Take n tokens if min(n, capacity) are there (None); else take none and return the
        seconds until they are."""
        self._refill(now)
        needed = min(float(n), self.capacity)
        if self.tokens < needed:
            return (needed - self.tokens) / self.rate
        self.tokens -= n
        return None

    def take(self, n: float, now: float) -> float:
        """Take n tokens, overdrawing if need be; the seconds until the debt is paid (0: none)."""
        self._refill(now)
        self.tokens -= n
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate


class SourceRateLimiter:
    """The edge's buckets per source name; sources without a rate are not limited."""

    def __init__(
        self,
        rates: dict[str, float],
        default_rate: float | None = None,
        burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rates = rates
        self._default = default_rate
        self._burst_s = burst_s
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._rates) or self._default is not None

    def retry_after(self, source: str, n: int) -> int | None:
        """None when `n` events of `source` may pass now; else whole seconds to wait (>= 1)."""
        rate = self._rates.get(source, self._default)
        if rate is None:
            return None
        now = self._clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            capacity = max(rate * self._burst_s, 1.0)
            bucket = self._buckets[source] = TokenBucket(rate, capacity, capacity, now)
        wait = bucket.admit(n, now)
        return None if wait is None else max(1, math.ceil(wait))


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
        self._bucket = (
            None if self.rate is None else TokenBucket(self.rate, self.burst, self.burst, clock())
        )

    def delay_for(self, units: float) -> float:
        """Take `units` and return how long the caller must wait first (0 when within budget)."""
        if self._bucket is None:
            return 0.0
        return self._bucket.take(units, self._clock())

    def acquire(self, units: float = 1.0) -> None:
        """Block until `units` fit in the budget."""
        wait = self.delay_for(units)
        if wait > 0:
            self._sleep(wait)
