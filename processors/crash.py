"""The worker's first fatal error, and the crash of the Faust app it sets off.

A failed hand-off to Kafka or a table recovery that skipped committed state leaves the live
state ahead of (or behind) what Kafka holds; the worker must not go on, and Faust's restart of a
failed agent is not enough. A worker that makes no progress (:mod:`processors.progress`) is
stopped the same way. So whoever finds such an error calls :meth:`WorkerCrash.fail`: the
app crashes (it stops, committing the transactions that are whole) and ``segflow process``
exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging

import faust

logger = logging.getLogger(__name__)


class WorkerCrash:
    """Holds the first error that stops the worker (`error`) and the app's crash (`crashing`)."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.error: BaseException | None = None
        self.crashing: asyncio.Future[None] | None = None

    def fail(self, exc: BaseException) -> None:
        """Mark the worker failed and crash the app: it stops (committing the transactions
        that are whole) and exits non-zero, rather than going on with state ahead of Kafka.
        Later errors are ignored: the first one is the cause."""
        if self.error is not None:
            return
        self.error = exc
        logger.error("the worker will stop: %s", type(exc).__name__)
        self.crashing = asyncio.ensure_future(self.app.crash(exc))
