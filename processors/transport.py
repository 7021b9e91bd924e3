"""A leaner Faust consumer loop: the one place segflow changes how Faust 0.15.3 fetches.

Faust's ``Consumer._drain_messages`` hands every fetched record to the conductor through
``Service.wait_first(callback(message), suspend_flow.wait())``, which creates two tasks and an
``asyncio.wait`` per record; on this project's 2-core machines that alone capped a worker at a few
thousand records per second. ``LeanConsumer`` keeps the loop's bookkeeping (read offsets, gaps,
commit-every) and awaits the callback directly. What ``wait_first`` protected against, a callback
blocked while a rebalance suspends the flow, cannot hang here: a rebalance sets ``suspend_flow``
(checked before every record: no record is delivered once it is set) and then stops the fetcher,
which cancels this loop and any callback it awaits, exactly as before.

``SegflowApp`` is a ``faust.App`` whose consumer transport uses ``LeanConsumer``; everything else
(producers, transactions, tables, recovery) is Faust's own. faust-streaming is pinned in
pyproject.toml; tests/integration/test_processors_*.py run the worker on the real broker.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP


class LeanConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer without the per-record ``wait_first``."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs Kafka
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        suspended = self.suspend_flow.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        since_yield = 0
        while not (consumer_should_stop() or fetcher_should_stop()):
            records = cast(Any, getmany(timeout=1.0))
            await asyncio.sleep(0)
            if self.should_stop:
                break
            async for tp, message in records:
                since_yield += 1
                if since_yield > 500:
                    await asyncio.sleep(0)
                    since_yield = 0
                if suspended():
                    continue  # rebalancing: the fetcher is about to be stopped, records re-read
                offset = message.offset
                r_offset = get_read_offset(tp)
                if r_offset is not None and offset < r_offset:
                    continue
                if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await callback(message)
                set_read_offset(tp, offset)


class LeanTransport(faust_aiokafka.Transport):
    Consumer = LeanConsumer


class SegflowApp(faust.App):
    """A Faust app whose consumer is :class:`LeanConsumer`."""

    def _new_transport(self) -> Any:
        return LeanTransport(self.conf.broker_consumer, self)


__all__ = ["TP", "LeanConsumer", "LeanTransport", "SegflowApp"]
