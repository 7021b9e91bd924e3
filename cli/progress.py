"""Progress of long operator jobs on stderr: a redrawn line on a terminal, a line every few
seconds otherwise (CronJob and CI logs)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Counts units of work against an optional total and reports the rate."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "events",
        stream: TextIO | None = None,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._every_s = every_s if every_s is not None else (0.2 if self._tty else 5.0)
        self._clock = clock
        self._started = clock()
        self._last = self._started
        self.note = ""

    def advance(self, units: int = 1) -> None:
        self.done += units
        now = self._clock()
        if now - self._last >= self._every_s:
            self._last = now
            self._draw(final=False)

    def line(self) -> str:
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            pct = min(100.0, 100.0 * self.done / self.total)
            width = 24
            filled = int(width * pct / 100)
            bar = "#" * filled + "-" * (width - filled)
            text = f"{self.label} [{bar}] {pct:5.1f}% {self.done}/{self.total} {self.unit}"
        else:
            text = f"{self.label} {self.done} {self.unit}"
        text += f" {rate:,.0f}/s {elapsed:,.0f}s"
        return f"{text} {self.note}".rstrip()

    def finish(self) -> None:
        self._draw(final=True)

    def _draw(self, *, final: bool) -> None:
        if self._tty:
            end = "\n" if final else ""
            self._stream.write("\r\x1b[2K" + self.line() + end)
        else:
            self._stream.write(self.line() + "\n")
        self._stream.flush()
