"""Per-source rate limits: a token bucket per source that a request may overdraw.

A source's rate (events/s) comes from its rule (``rate_limit_per_s``) or the edge's default
(off unless set). The bucket holds ``rate * burst_s`` tokens. A request of n events needs
min(n, bucket size) tokens and takes n, possibly going below zero, so a batch larger than the
bucket is not refused forever; otherwise it gets 429 with Retry-After = the whole seconds until
enough tokens are back. The long-run rate is the configured one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, n: int, now: float) -> float | None:
        """Take n tokens; None if allowed, else the seconds to wait."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(float(n), self.capacity)
        if self.tokens < needed:
            return (needed - self.tokens) / self.rate
        self.tokens -= n
        return None


class RateLimiter:
    """Buckets per source name; sources without a rate are not limited."""

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
        wait = bucket.take(n, now)
        return None if wait is None else max(1, math.ceil(wait))
