"""A clock the test moves by hand, for code that takes a clock (and a sleep) to call."""

from __future__ import annotations


class ManualClock:
    """`now` is what calling it returns; `sleep` moves it on and records the wait."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
