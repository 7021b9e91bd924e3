"""Schema-change alerts to a Slack-compatible webhook, rate-limited.

``AlertBatcher`` is the pure part: changes accumulate, and at most one message is due per
``min_interval_s``; a message lists up to ``max_lines`` changes and says how many more there
were. ``WebhookAlerter`` posts due messages from a background task (aiohttp), so a slow or
failing webhook never holds the stream up; failures are logged and counted, never retried
into a storm. Messages name sources, events, fields and types, never values. The names arrive
masked (:mod:`processors.masking` renames a key or event name holding an email, phone or card
number before drift sees it); :func:`describe` still replaces whatever the detector finds in them
by ``[redacted]``, so a miss upstream never reaches a chat channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from processors.detector import CARD, EMAIL, PHONE, find_pii
from processors.metrics import ProcessorMetrics

logger = logging.getLogger(__name__)


_KINDS = (EMAIL, PHONE, CARD)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with each email, phone or card number the detector finds replaced."""
    findings = find_pii(text, _KINDS)
    if not findings:
        return text
    out: list[str] = []
    pos = 0
    for f in findings:
        out.append(text[pos : f.start])
        out.append(REDACTED)
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def describe(change: dict[str, Any]) -> str:
    where = f"{change['source']}.{change['callType']}"
    if change.get("event"):
        where += f" '{redact(str(change['event']))}'"
    if change["change"] == "type_change":
        what = f"type {change['previousType']} -> {change['newType']}"
    else:
        what = f"{change['change'].replace('_', ' ')} ({change['newType']})"
    return f"{where}: {redact(str(change['field']))} {what}"


class AlertBatcher:
    """Collects changes; `due(now)` returns one message at most every `min_interval_s`."""

    def __init__(self, min_interval_s: float, max_lines: int = 20, max_pending: int = 1000):
        self.min_interval_s = min_interval_s
        self.max_lines = max_lines
        self.max_pending = max_pending
        self._pending: list[str] = []
        self._dropped = 0
        self._last_sent: float | None = None

    def add(self, change: dict[str, Any]) -> None:
        if len(self._pending) < self.max_pending:
            self._pending.append(describe(change))
        else:
            self._dropped += 1

    def due(self, now: float) -> dict[str, str] | None:
        """The Slack payload to post now, or None (nothing pending, or too soon)."""
        if not self._pending:
            return None
        if self._last_sent is not None and now - self._last_sent < self.min_interval_s:
            return None
        lines = self._pending[: self.max_lines]
        more = len(self._pending) - len(lines) + self._dropped
        total = len(self._pending) + self._dropped
        self._pending, self._dropped = [], 0
        self._last_sent = now
        head = f"segflow: {total} schema change{'s' if total != 1 else ''}"
        body = "\n".join(f"- {line}" for line in lines)
        if more:
            body += f"\n... and {more} more"
        return {"text": f"{head}\n{body}"}


class WebhookAlerter:
    """Posts the batcher's messages to the webhook from a background asyncio task."""

    def __init__(
        self,
        url: str,
        batcher: AlertBatcher,
        metrics: ProcessorMetrics,
        timeout_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.url = url
        self.batcher = batcher
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, change: dict[str, Any]) -> None:
        self.batcher.add(change)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                self._wake.clear()
                payload = self.batcher.due(self.clock())
                if payload is None:
                    continue
                try:
                    async with session.post(self.url, json=payload) as resp:
                        ok = resp.status < 300
                except (aiohttp.ClientError, TimeoutError) as exc:
                    logger.warning("schema-change webhook failed: %s", type(exc).__name__)
                    ok = False
                else:
                    if not ok:
                        logger.warning("schema-change webhook answered %s", resp.status)
                self.metrics.alerts.labels("sent" if ok else "failed").inc()
