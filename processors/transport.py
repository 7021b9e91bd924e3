"""A leaner Faust consumer loop: the one place segflow changes how Faust 0.15.3 consumes.

Faust hands every fetched record to the conductor, which builds an event, decodes it through
the topic's schema and puts it on the agent's channel, where the agent takes it and acks it:
several awaits, allocations and locks per record. Faust's own ``_drain_messages`` even wraps each
delivery in ``Service.wait_first`` (two tasks and an ``asyncio.wait`` per record). On this
project's 2-core machines that per-record path cost more than the processing itself.

``LeanConsumer`` keeps the loop's bookkeeping (flow control, generation ids, read offsets, gaps,
commit-every) and delivers the records of the app's ``batch_topics`` (the raw topics) as one list
of messages per fetch to the app's ``batch_sink`` (the processors' agent, see
:mod:`processors.app`); every other record (the tables' changelogs, read back during recovery)
goes record by record to the conductor, as Faust does. Records fetched while a rebalance
suspends the flow are not delivered (the fetcher is about to be stopped; the partitions are read
again from the committed offsets), and every message carries the consumer generation it was
fetched in, so whoever processes it can drop what a rebalance made stale, as Faust's streams do.

It also asks the broker for the offsets table recovery reads the changelogs up to
(:meth:`LeanConsumer.highwaters`): Faust's own answer under exactly-once is a cached value that is
missing before the first fetch, which made a restarted worker skip recovery.

``SegflowApp`` is a ``faust.App`` whose consumer transport uses ``LeanConsumer``; everything else
(producers, transactions, tables, recovery) is Faust's own. faust-streaming is pinned in
pyproject.toml; tests/integration/test_processors_*.py run the worker on the real broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

BatchSink = Callable[[list[Message]], Awaitable[None]]


class LeanConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer delivering one list of messages per fetch."""

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """End offsets asked of the broker (the last stable offsets under read_committed).

        Table recovery reads each changelog partition up to this offset. With transactions,
        Faust 0.15.3 takes it from ``last_stable_offset``: the value the last *fetch response*
        of the partition carried, None before the partition was fetched at all (Faust reads it
        as "empty changelog") and stale after. A worker whose transactional producers started
        quickly (the previous owner had left no transaction open: a graceful stop, or a kill
        right after a commit) built its tables before any changelog fetch and started with an
        empty dedupe state, letting every copy of an already processed event through. A
        ListOffsets request answers for the partition as it is now; Faust asks after this
        worker's transactional producers have fenced the previous owner and ended its
        transactions, so nothing before that offset can still change.
        """
        thread: Any = self._thread
        consumer = thread._ensure_consumer()
        offsets: Mapping[TP, int] = await thread.call_thread(consumer.end_offsets, list(partitions))
        return offsets

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs Kafka
        app = self.app
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        suspended = self.suspend_flow.is_set
        read_offset = self._read_offset
        commit_every = self._commit_every
        acks_enabled_for = app.topics.acks_enabled_for
        to_message = self._to_message
        track_end_offset = app.monitor.track_tp_end_offset
        batch_topics: frozenset[str] = getattr(app, "batch_topics", frozenset())
        while not (consumer_should_stop() or fetcher_should_stop()):
            records, active = await self._wait_next_records(1.0)
            await asyncio.sleep(0)
            if self.should_stop:
                break
            if not records:
                continue
            if not self.flow_active:  # as Faust's getmany: back to the committed offsets
                await self.perform_seek()
                continue
            generation = app.consumer_generation_id
            sink: BatchSink | None = getattr(app, "batch_sink", None)
            batch: list[Message] = []
            advanced: list[tuple[TP, int]] = []
            for tp, fetched in records.items():
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    continue
                track_end_offset(tp, self.highwater(tp))
                r_offset = read_offset[tp]
                acks = acks_enabled_for(tp.topic)
                batched = sink is not None and tp.topic in batch_topics
                for record in fetched:
                    offset = record.offset
                    if r_offset is not None and offset < r_offset:
                        continue
                    if r_offset and offset - r_offset > 1 and acks:
                        await self._add_gap(tp, r_offset + 1, offset)
                    if batched:
                        batch.append(to_message(tp, record))
                        r_offset = offset
                        continue
                    if suspended():
                        break  # rebalancing: the fetcher is about to be stopped
                    await callback(to_message(tp, record))
                    r_offset = offset
                    read_offset[tp] = offset
                if batched and r_offset is not None:
                    advanced.append((tp, r_offset))
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            if not batch or suspended() or app.consumer_generation_id != generation:
                continue  # rebalancing: the fetcher is about to be stopped, records re-read
            assert sink is not None
            await sink(batch)
            for tp, offset in advanced:
                read_offset[tp] = offset


class LeanTransport(faust_aiokafka.Transport):
    Consumer = LeanConsumer


class SegflowApp(faust.App):
    """A Faust app whose consumer is :class:`LeanConsumer`.

    ``batch_sink``, when set, receives the fetched messages of ``batch_topics`` instead of the
    conductor, one list per fetch.
    """

    batch_sink: BatchSink | None = None
    batch_topics: frozenset[str] = frozenset()

    def _new_transport(self) -> Any:
        return LeanTransport(self.conf.broker_consumer, self)


__all__ = ["TP", "BatchSink", "LeanConsumer", "LeanTransport", "SegflowApp"]
