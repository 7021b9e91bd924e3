"""The one seam between segflow's processors and Faust's private members.

Faust 0.15.3 has no public API for what the processors need: sending a partition's output
through that partition's transactional producer, reading back what table recovery loaded, and a
consumer loop that hands whole fetches to the agent. So the processors reach into Faust, and
*only here*: every private member (``_transaction_producers``, ``_trn_locks``,
``_ensure_producer``, the producer's ``commit_transactions`` (:class:`LeanProducer` commits a
commit's transactions side by side), the memory store's ``_key_partition``, the consumer's
``_drain_messages`` and the bookkeeping it uses, its acked offsets, its paused and active
partitions (read for the log of a stall), ``App._new_transport``) is touched in this module
and nowhere else.
:func:`check` runs at worker start-up, before anything is consumed: it verifies that the installed
faust-streaming is a version this module was written against and that each member exists with
the kind expected (callable, coroutine function, attribute of a type), and raises
:class:`FaustSeamError` naming the member and the version otherwise. A rename in Faust then stops
the worker with a clear message instead of turning a guarantee off silently (never
``getattr(obj, "_x", default)`` on a private member).

The consumer loop. Faust hands every fetched record to the conductor, which builds an event,
decodes it through the topic's schema and puts it on the agent's channel, where the agent takes
it and acks it: several awaits, allocations and locks per record. Faust's own
``_drain_messages`` even wraps each delivery in ``Service.wait_first`` (two tasks and an
``asyncio.wait`` per record). On this project's 2-core machines that per-record path cost more
than the processing itself. :class:`LeanConsumer` keeps the loop's bookkeeping (flow control,
generation ids, read offsets, gaps, commit-every) and delivers the records of the app's
``batch_topics`` (the raw topics) as one list of messages per fetch to the app's ``batch_sink``
(the processors' agent, see :mod:`processors.batch_agent`); every other record (the tables'
changelogs, read back during recovery) goes record by record to the conductor, as Faust does.
Records fetched while a rebalance suspends the flow are not delivered (the fetcher is about to
be stopped; the partitions are read again from the committed offsets), and every message
carries the consumer generation it was fetched in, so whoever processes it can drop what a
rebalance made stale, as Faust's streams do.

Stuck commits. Faust commits a partition's offsets up to the first offset not yet acked, and
not at all while the lowest acked offset is more than one above the committed one: a record read
but never acked (dropped as stale and never read again, say) stops the partition's commits for
good, silently, while its acked offsets pile up in memory; Faust commits no transaction for a
partition it has no offset to commit for, so the output of its records since the last commit stays
invisible, until the broker aborts that transaction (60 s, the producers' transaction timeout).
:class:`CommitWatch` notices a partition whose committed offset has not moved for
``commit_stall_s`` (at most 30 s) while acks wait above such a hole, or while records delivered
from that offset on wait with none acked (the client's position already past them, so they are
not fetched again: seen at the end of a rebalance); the consumer then logs it,
tells the app's ``commit_stall_listener`` (a metric) and seeks the partition back to its
committed offset, from where the hole is read again; what had been processed after it is found
in the dedupe state and dropped, its output still in the open transaction, which the next commit
commits. (Were that transaction aborted already, the worker's next send or commit in it would
fail and the worker restart from the committed state, as after any failed hand-off.) The records
after the hole were then processed before it: the last resort, for a hole the fetch loop's check
of Order (below) did not keep from being processed past.

Order. A partition's records must be processed in offset order: stitching refuses a shared
device's sixth userId, so an identify processed after a later one links another user. Records
dropped unprocessed leave a hole when nothing seeks back over them: aiokafka's
``seek_to_committed`` does not seek a partition whose committed offset is None or 0 (a new
consumer group), and a fetch can be lost with its cancelled caller at the end of a rebalance.
The records after such a hole were processed before it once :class:`CommitWatch` read it again
(an identify of a shared device, say, refused behind later ones), or never: Faust takes a gap
between the offsets it reads for a transaction's marker and aborted records, and commits past
it. So :class:`LeanConsumer` keeps the offset each raw partition's next record must have (the
committed offset after a rebalance, the log start with none committed, then one past the last
record delivered) and delivers no fetch that starts past it: the partition is sought back to
that offset and read again. A fetch that starts at the same offset once more had a genuine gap
(a transaction's marker or aborted records, a retention cut) and is delivered. Gaps inside one
fetch are the client's own reading and are taken as they are.

It also asks the broker for the offsets table recovery reads the changelogs up to
(:meth:`LeanConsumer.highwaters`): Faust's own answer under exactly-once is a cached value that is
missing before the first fetch, which made a restarted worker skip recovery. It records them, with
the changelogs' low watermarks, for the processors' check that recovery loaded what it should.

:class:`SegflowApp` is a ``faust.App`` whose consumer is :class:`LeanConsumer` and whose table
manager tells the app of each rebalance (partitions revoked, generation) before table recovery
starts, and whose producer commits a commit's transactions concurrently; everything else
(producers, transactions, tables, recovery) is Faust's own.
faust-streaming is pinned in pyproject.toml; tests/unit/processors/test_faust_seam.py runs the
check, tests/integration/test_processors_*.py run the worker on the real broker.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakSet

import faust
import mode
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types import tuples as faust_tuples
from mode.utils.futures import notify
from mode.utils.locks import Event as ModeEvent

from processors.progress import WAITING_LAG
from schemas.errors import FatalError

logger = logging.getLogger(__name__)

RLockType = type(threading.RLock())
#: the faust-streaming versions this module was written and tested against
SUPPORTED_FAUST_VERSIONS = frozenset({"0.15.3"})

BatchSink = Callable[[list[Message]], Awaitable[None]]
#: (assigned, revoked, generation id) -> changelog partitions to read back in full as well
RebalanceListener = Callable[[set[TP], set[TP], int], Awaitable[set[TP]]]
#: (partition, committed offset, lowest acked offset) of a partition read again after a stall
CommitStallListener = Callable[[TP, int, int], None]
#: (partition, first offset skipped, first offset fetched past them)
SkippedFetchListener = Callable[[TP, int, int], None]


class FaustSeamError(FatalError):
    """The installed Faust lacks a member the processors rely on (or is not a known version)."""


def faust_version() -> str:
    return importlib.metadata.version("faust-streaming")


# -- producers ---------------------------------------------------------------------------------


def transaction_producer(app: faust.App, transactional_id: str) -> Any | None:
    """The aiokafka producer Faust holds for `transactional_id` (None when it holds none)."""
    producers: dict[str, Any] = app.producer._transaction_producers  # type: ignore[attr-defined]
    return producers.get(transactional_id)


def transaction_lock(app: faust.App, transactional_id: str) -> asyncio.Lock:
    """The lock Faust takes around every call on that transactional producer."""
    locks: dict[str, asyncio.Lock] = app.producer._trn_locks  # type: ignore[attr-defined]
    return locks[transactional_id]


def forget_transaction_producer(app: faust.App, transactional_id: str, txp: Any) -> None:
    """Drop `txp` from Faust's producers (Faust commits only the ids it holds a producer for);
    a newer producer Faust started for the same id meanwhile stays."""
    producers: dict[str, Any] = app.producer._transaction_producers  # type: ignore[attr-defined]
    if producers.get(transactional_id) is txp:
        del producers[transactional_id]


def plain_producer(app: faust.App) -> Any:
    """The started non-transactional aiokafka producer (at-least-once mode)."""
    return app.producer._ensure_producer()  # type: ignore[attr-defined]


async def restart_transaction(app: faust.App, transactional_id: str) -> None:
    """Abort the open transaction of `transactional_id` and begin a new one (Faust replaces a
    fenced producer on the way)."""
    producer: Any = app.producer
    await producer.abort_transaction(transactional_id)
    await producer.begin_transaction(transactional_id)


# -- tables ------------------------------------------------------------------------------------


def take_recovered(table: Any) -> dict[int, list[tuple[Any, Any]]]:
    """What table recovery read into `table`'s memory store, by partition, and empty the store
    (the live state is kept in :mod:`processors.state`, not in Faust's store)."""
    store = table.data
    data: MutableMapping[Any, Any] = store.data
    key_partition: MutableMapping[Any, int] = store._key_partition
    out: dict[int, list[tuple[Any, Any]]] = {}
    for key, value in data.items():
        part = key_partition.get(key)
        if part is not None and value:
            out.setdefault(part, []).append((key, value))
    data.clear()
    key_partition.clear()
    return out


def forget_store_partition(table: Any, partition: int) -> None:
    """Remove from `table`'s memory store what an interrupted recovery read for `partition`."""
    store = table.data
    key_partition: MutableMapping[Any, int] = store._key_partition
    keys = [k for k, p in key_partition.items() if p == partition]
    for key in keys:
        store.data.pop(key, None)
        del key_partition[key]


class SegflowRecovery(Recovery):
    """Faust's table recovery, remembering which generation's recovery is completing.

    A recovery can complete just as the next rebalance starts: Faust abandons its
    ``on_recovery_completed`` on the new rebalance, but the tables' callbacks it scheduled run
    on, while the new generation's recovery has not read its new partitions' changelogs yet.
    The callbacks read :func:`completing_generation` to tell that case apart.
    """

    completing_generation: int | None = None

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.completing_generation = generation_id
        await super().on_recovery_completed(generation_id)


def completing_generation(app: faust.App) -> int | None:
    """The consumer generation whose table recovery completed last (None before the first)."""
    tables: Any = app.tables
    recovery = tables.recovery
    return recovery.completing_generation if isinstance(recovery, SegflowRecovery) else None


class SegflowTableManager(TableManager):
    """Faust's table manager, telling the app of a rebalance before table recovery starts, with
    :class:`SegflowRecovery` as its recovery.

    The app's ``rebalance_listener`` gets the new assignment, the partitions Faust counts as
    revoked and the generation, and may name more changelog partitions to read back in full
    (treated as revoked by recovery, which then reads them from their start).
    """

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SegflowRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        app = self.app
        listener = app.rebalance_listener if isinstance(app, SegflowApp) else None
        if listener is not None:
            revoked = set(revoked) | await listener(set(assigned), set(revoked), generation_id)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)


# -- the consumer ------------------------------------------------------------------------------


#: how often the consumer loop looks for partitions whose records wait with nothing acked
WAITING_CHECK_EVERY_S = 1.0


class CommitWatch:
    """The partitions whose commits are stuck behind offsets read but never acked.

    Faust's ``Consumer._new_offset`` returns no committable offset while the lowest acked
    offset of a partition is more than one above its committed offset (one: a transaction
    marker's offset). :meth:`observe` is told of each such answer; a partition whose committed
    offset stayed the same for `stall_s` with acks waiting above the hole becomes *due*: to be
    read again from that committed offset (:meth:`take_due`). A partition is due again only after
    another `stall_s` without progress.

    The same holds for a partition whose records wait with nothing acked, nothing committed and
    nothing delivered for `stall_s` (:meth:`check_waiting`): seen at the end of a rebalance, the
    client's position past records the worker never processed (a fetch dropped as stale after
    the seek back to the committed offsets, or lost with its cancelled caller); nothing shows
    it, and nothing is fetched or committed until the partition is read again.
    """

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self._clock = clock
        #: partition -> (committed offset, since when its commits have been held back at it)
        self._since: dict[TP, tuple[int, float]] = {}
        #: partition -> (committed offset to read again from, lowest acked offset, or the high
        #: watermark when nothing was acked)
        self._due: dict[TP, tuple[int, int]] = {}
        #: partition -> the last offset the Kafka client delivered for it
        self._received: dict[TP, int] = {}
        #: partition -> ((committed offset, last offset delivered), since when records have
        #: waited with that, none acked)
        self._waiting_since: dict[TP, tuple[tuple[int, int | None], float]] = {}
        self._next_check = 0.0
        #: partition -> (committed offset, high watermark) it was last read again at for
        #: records waiting: not again at the same (a tail that delivers nothing when read, such
        #: as a transaction's aborted records, waits for good; the progress watchdog judges it)
        self._sought: dict[TP, tuple[int, int]] = {}

    def observe(self, tp: TP, committed: int | None, acked: Sequence[int]) -> None:
        """Faust found nothing to commit for `tp` (its acked offsets sorted, as Faust leaves
        them)."""
        if not committed or not acked or acked[0] - committed <= 1:
            self._since.pop(tp, None)  # no hole: nothing acked, or the next offset is
            return
        now = self._clock()
        since = self._since.get(tp)
        if since is None or since[0] != committed:
            self._since[tp] = (committed, now)
        elif now - since[1] >= self.stall_s:
            self._since[tp] = (committed, now)
            self._due[tp] = (committed, acked[0])

    def moved(self, tp: TP) -> None:
        """`tp` has an offset to commit: not stuck."""
        self._since.pop(tp, None)

    def received(self, tp: TP, offset: int) -> None:
        """The Kafka client delivered `tp`'s records up to `offset` (kept or dropped after)."""
        self._received[tp] = offset

    def due_for_a_look(self) -> bool:
        """Whether :meth:`check_waiting` is due (once a second: the loop runs once a fetch).
        After a longer gap (the loop waited on a full batch queue) the clocks start again:
        nothing was delivered meanwhile because nothing was fetched."""
        now = self._clock()
        if now < self._next_check:
            return False
        if now - self._next_check > WAITING_CHECK_EVERY_S * 4:
            self.settling()
        self._next_check = now + WAITING_CHECK_EVERY_S
        return True

    def settling(self) -> None:
        """A rebalance or table recovery: records wait legitimately; clocks start again."""
        self._waiting_since.clear()

    def check_waiting(self, partitions: Mapping[TP, tuple[int | None, bool, int | None]]) -> None:
        """`partitions`: assigned partition -> (committed offset, whether acked offsets wait for
        a commit, high watermark). One whose records wait (the high watermark two or more
        above the committed offset) with nothing acked, nothing committed and nothing delivered
        for `stall_s` is due to be read again: its records were fetched and dropped with no
        seek back to follow (the client's position past them), or fetched and lost."""
        now = self._clock()
        for tp in [tp for tp in self._waiting_since if tp not in partitions]:
            del self._waiting_since[tp]
        for tp, (committed, has_acks, highwater) in partitions.items():
            if (
                not committed
                or highwater is None
                or highwater - committed < WAITING_LAG
                or has_acks  # committed soon, or a hole, which observe() judges
            ):
                self._waiting_since.pop(tp, None)
                continue
            key = (committed, self._received.get(tp))
            since = self._waiting_since.get(tp)
            if since is None or since[0] != key:
                self._waiting_since[tp] = (key, now)
            elif now - since[1] >= self.stall_s:
                self._waiting_since[tp] = (key, now)
                if self._sought.get(tp) != (committed, highwater):
                    self._sought[tp] = (committed, highwater)
                    self._due[tp] = (committed, highwater)

    @property
    def any_due(self) -> bool:
        return bool(self._due)

    def take_due(self) -> dict[TP, tuple[int, int]]:
        """The partitions due to be read again, forgotten here."""
        due, self._due = self._due, {}
        return due


class LeanConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread whose worker consumer fetches with the app's
    ``fetch_min_bytes`` and ``fetch_max_wait_ms`` (Faust fixes them at 1 byte and 1.5 s, the
    settings' defaults too: well below a worker's capacity a fetch then answers for each few
    records; bench/results/cost-per-event.md)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app: Any = self.app
        for attribute, value in (
            ("_fetch_min_bytes", app.fetch_min_bytes),
            ("_fetch_max_wait_ms", app.fetch_max_wait_ms),
        ):
            if not hasattr(consumer, attribute):
                raise FaustSeamError(
                    f"aiokafka's consumer has no {attribute} (aiokafka "
                    f"{importlib.metadata.version('aiokafka')}): the processors set their fetch "
                    "size through it; pin the aiokafka version they support"
                )
            setattr(consumer, attribute, value)
        return consumer


class LeanConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer delivering one list of messages per fetch."""

    def _new_consumer_thread(self) -> LeanConsumerThread:
        return LeanConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def __post_init__(self) -> None:
        super().__post_init__()
        #: low watermark and end offset of each changelog partition, as last asked by recovery
        self.low_offsets: dict[TP, int] = {}
        self.end_offsets: dict[TP, int] = {}
        #: raw partition -> the offset its next delivered record must have (see Order), in
        #: consumer generation `expected_generation` (forgotten at the next: an offset of an
        #: earlier assignment says nothing of the partition's records now)
        self.expected: dict[TP, int] = {}
        self.expected_generation: int | None = None
        #: raw partition -> (expected offset, first offset fetched) of the last gap read again
        self.gaps_checked: dict[TP, tuple[int, int]] = {}

    def _expect_in(self, generation: int) -> None:
        """Forget the expected offsets of an earlier consumer generation."""
        if self.expected_generation != generation:
            self.expected.clear()
            self.gaps_checked.clear()
            self.expected_generation = generation

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every assigned partition to its committed offset (Faust's), and expect each raw
        partition's next delivered record at that offset; with none committed, at its log
        start, and at 0 for offset 0 (aiokafka does not seek those two: the client's position
        may be past records a rebalance dropped, the hole of the module doc, Order, which the
        fetch loop then reads again).

        No seek of its own: the fetch loop may deliver records while this runs (Faust resumes
        the flow for table recovery, before it seeks), and a seek back over them would have
        them processed twice. A partition delivered meanwhile keeps the offset its delivery
        set."""
        app: Any = self.app
        self._expect_in(app.consumer_generation_id)
        before = dict(self.expected)
        committed = await super().seek_to_committed()
        raw = [tp for tp in committed if tp.topic in app.batch_topics]
        offsets = {tp: committed[tp] for tp in raw if committed[tp] is not None}
        fresh = [tp for tp in raw if committed[tp] is None]
        if fresh:  # Faust's answer, not recorded as a changelog's (earliest_offsets below)
            lows = await super().earliest_offsets(*fresh)
            offsets.update({tp: lows[tp] for tp in fresh if lows.get(tp) is not None})
        for tp in raw:
            if self.expected.get(tp) != before.get(tp):
                continue  # delivered meanwhile
            if tp in offsets:
                self.expected[tp] = offsets[tp]
            else:
                self.expected.pop(tp, None)
        return committed

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]:
        """Faust's answer, recorded (recovery asks it for the changelogs it reads)."""
        offsets = await super().earliest_offsets(*partitions)
        self.low_offsets.update({tp: o for tp, o in offsets.items() if o is not None})
        return offsets

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
        self.end_offsets.update(offsets)
        return offsets

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs Kafka
        app: Any = self.app
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        suspended = self.suspend_flow.is_set
        read_offset = self._read_offset
        commit_every = self._commit_every
        acks_enabled_for = app.topics.acks_enabled_for
        to_message = self._to_message
        track_end_offset = app.monitor.track_tp_end_offset
        batch_topics: frozenset[str] = app.batch_topics
        watch: CommitWatch | None = app.commit_watch
        while not (consumer_should_stop() or fetcher_should_stop()):
            if watch is not None:
                if watch.due_for_a_look():
                    self._look_for_waiting(watch, batch_topics)
                if watch.any_due:
                    await self._read_again(watch.take_due())  # nothing fetched is held now
            records, active = await self._wait_next_records(1.0)
            await asyncio.sleep(0)
            if self.should_stop:
                break
            if not records:
                continue
            if watch is not None:
                for tp, fetched in records.items():
                    if fetched and tp.topic in batch_topics:
                        watch.received(tp, fetched[-1].offset)
            if not self.flow_active:  # as Faust's getmany: back to the committed offsets
                await self.perform_seek()
                continue
            generation = app.consumer_generation_id
            self._expect_in(generation)
            sink: BatchSink | None = app.batch_sink
            batch: list[Message] = []
            advanced: list[tuple[TP, int]] = []
            rewind: dict[TP, int] = {}
            for tp, fetched in records.items():
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    continue
                track_end_offset(tp, self.highwater(tp))
                r_offset = read_offset[tp]
                acks = acks_enabled_for(tp.topic)
                batched = sink is not None and tp.topic in batch_topics
                if batched:
                    gap = self._unchecked_gap(tp, fetched, r_offset)
                    if gap is not None:
                        rewind[tp] = gap
                        continue
                n_before = len(batch)
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
                if batched and r_offset is not None and len(batch) > n_before:
                    advanced.append((tp, r_offset))
            if rewind:
                await self._read_gaps_again(rewind)
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            if not batch or suspended() or app.consumer_generation_id != generation:
                continue  # rebalancing: the fetcher is about to be stopped, records re-read
            assert sink is not None
            # the read offsets move before the hand-over, not after it: the hand-over may wait
            # (queue full, flow suspended) across a rebalance, which ends by seeking back to the
            # committed offsets; moving them afterwards would undo that seek, and the records
            # read again would be skipped as read, never acked, and the partition's commits
            # stuck behind them (or, with nothing committed yet, made past them)
            expected = self.expected
            for tp, offset in advanced:
                read_offset[tp] = offset
                expected[tp] = offset + 1
            await sink(batch)

    def _unchecked_gap(self, tp: TP, fetched: Sequence[Any], r_offset: int | None) -> int | None:
        """The offset to read `tp` again from when its fetch starts past the offset its next
        record must have and that gap was not read again yet (see the module doc, Order);
        None to deliver the fetch. A fetch read again that starts at the expected offset shows
        the gap was a hole: logged, and told to the app's ``skipped_fetch_listener``."""
        expected = self.expected.get(tp)
        if expected is None:
            return None
        first = next((r.offset for r in fetched if r_offset is None or r.offset >= r_offset), None)
        if first is None:
            return None
        checked = self.gaps_checked.pop(tp, None)
        if first <= expected:
            if checked is not None and checked[0] == first:
                logger.warning(
                    "%s: offsets %d to %d had been skipped (fetched and dropped, or lost, with "
                    "no seek back over them); read again, in order",
                    tp,
                    first,
                    checked[1] - 1,
                )
                app: Any = self.app
                listener: SkippedFetchListener | None = app.skipped_fetch_listener
                if listener is not None:
                    listener(tp, first, checked[1])
            return None
        if checked == (expected, first):
            return None  # a genuine gap: reading again started past it too
        self.gaps_checked[tp] = (expected, first)
        return expected

    async def _read_gaps_again(self, rewind: Mapping[TP, int]) -> None:
        """Seek the partitions whose fetch skipped offsets back to the first one skipped."""
        for tp, offset in rewind.items():
            logger.info(
                "%s fetched from offset %d while offset %d was next: reading it again from %d",
                tp,
                self.gaps_checked[tp][1],
                offset,
                offset,
            )
        await self._thread.seek_wait(dict(rewind))

    def _new_offset(self, tp: TP) -> int | None:
        """Faust's committable offset of `tp`, told to the app's :class:`CommitWatch`."""
        offset: int | None = super()._new_offset(tp)
        watch: CommitWatch | None = self.app.commit_watch  # type: ignore[attr-defined]
        if watch is not None:
            if offset is None:
                watch.observe(tp, self._committed_offset[tp], self._acked[tp])
            else:
                watch.moved(tp)
        return offset

    def _look_for_waiting(self, watch: CommitWatch, batch_topics: frozenset[str]) -> None:
        """Tell `watch` where each assigned raw partition stands (nothing while the flow is
        stopped: a rebalance or table recovery)."""
        app: Any = self.app
        if not (self.flow_active and app.flow_control.is_active()) or app.rebalancing:
            watch.settling()
            return
        committed, acked = self._committed_offset, self._acked
        watch.check_waiting(
            {
                tp: (committed.get(tp), bool(acked.get(tp)), self.highwater(tp))
                for tp in self.assignment()
                if tp.topic in batch_topics
            }
        )

    async def _read_again(self, due: Mapping[TP, tuple[int, int]]) -> None:
        """Seek the partitions whose commits are stuck back to their committed offsets (those
        still assigned, their committed offset unchanged)."""
        app: Any = self.app
        assignment = self.assignment()
        partitions: dict[TP, int] = {}
        for tp, (committed, lowest_acked) in due.items():
            if tp not in assignment or self._committed_offset.get(tp) != committed:
                continue
            partitions[tp] = committed
            above = len(self._acked.get(tp) or ())
            logger.warning(
                "commits of %s stuck at offset %d for %.0f s: offsets %d to %d %s; reading it "
                "again from offset %d",
                tp,
                committed,
                app.commit_watch.stall_s,
                committed,
                lowest_acked - 1,
                f"were read but never acknowledged while {above} offsets above them were"
                if above
                else "wait with nothing acknowledged, committed or delivered",
                committed,
            )
            if app.commit_stall_listener is not None:
                app.commit_stall_listener(tp, committed, lowest_acked)
        if partitions:
            await self._thread.seek_wait(partitions)
            self.expected.update(partitions)


async def consumer_view(app: faust.App, tps: Iterable[TP], timeout_s: float = 3.0) -> str:
    """What the consumer holds of `tps`, for the log of a stall (on the event loop): the flow,
    and per partition Faust's view (paused, active, read and committed offsets, acked offsets
    waiting for a commit) and the Kafka client's (assigned, paused, fetch position, high
    watermark; a position not known within `timeout_s` is reported as such)."""
    consumer: Any = app.consumer
    paused: set[TP] = consumer._paused_partitions
    active: set[TP] | None = consumer._active_partitions
    read: Mapping[TP, int | None] = consumer._read_offset
    committed: Mapping[TP, int | None] = consumer._committed_offset
    acked: Mapping[TP, list[int]] = consumer._acked
    client: Any = consumer._thread._ensure_consumer()
    assigned, client_paused = set(client.assignment()), set(client.paused())
    parts = [
        f"flow {'active' if consumer.flow_active else 'stopped'}, flow control "
        f"{'active' if app.flow_control.is_active() else 'suspended'}, "
        f"{len(paused)} partitions paused"
    ]
    for tp in sorted(tps):
        waiting = acked.get(tp) or []
        try:
            position: object = await asyncio.wait_for(consumer.position(tp), timeout_s)
        except TimeoutError:
            position = f"not known within {timeout_s:g} s"
        except Exception as exc:  # a diagnostic: the error is the answer
            position = f"unknown ({type(exc).__name__})"
        parts.append(
            f"{tp.topic}[{tp.partition}]: {'paused' if tp in paused else 'not paused'}, "
            f"{'active' if active and tp in active else 'not active'}, read offset "
            f"{read.get(tp)}, committed {committed.get(tp)}, {len(waiting)} acked uncommitted; "
            f"client: {'assigned' if tp in assigned else 'not assigned'}, "
            f"{'paused' if tp in client_paused else 'not paused'}, position {position}, "
            f"high watermark {consumer.highwater(tp)}"
        )
    return "; ".join(parts)


def ack_all(consumer: Any, messages: list[Message]) -> None:
    """``consumer.ack(message)`` for each of `messages`, in order, with Faust's ack lock taken
    once for them all instead of once per message (Faust 0.15.3's ``Consumer.ack``, step for
    step: the offsets join the partitions' acked offsets, which the next commit turns into
    committable offsets; a message already acked, of a topic without acks, or below the
    committed offset adds nothing)."""
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    committed_offset: Mapping[TP, int | None] = consumer._committed_offset
    acked_index: Mapping[TP, set[int]] = consumer._acked_index
    acked: Mapping[TP, list[int]] = consumer._acked
    unacked: Any = consumer._unacked_messages
    added = 0
    with faust_tuples.ack_lock:
        try:
            for message in messages:
                if message.acked:
                    continue
                message.acked = True
                if not acks_enabled_for(message.topic):
                    continue
                tp, offset = message.tp, message.offset
                committed = committed_offset[tp]
                if committed is None or offset >= committed:
                    index = acked_index[tp]
                    if offset not in index:
                        unacked.discard(message)
                        index.add(offset)
                        acked[tp].append(offset)
                        added += 1
        finally:
            consumer._n_acked += added
            notify(consumer._waiting_for_ack)


class LeanProducer(faust_aiokafka.Producer):
    """Faust's producer, committing the open transactions of a commit side by side.

    Faust commits them one after the other: for each transactional id (one per partition
    number) AddOffsetsToTxn, TxnOffsetCommit and EndTxn, each waited for before the next id's
    begin, every one under that id's lock, which the agent's hand-over to that partition waits
    for. With 12 partitions a commit took 12 of those sequences (~0.17 s live here, over a
    second with a backlog on a loaded machine), longer than the 0.25 s commit interval. The
    transactions are independent (each its own partition's output and offsets, committed
    whole or not at all, as before), so they are committed concurrently. If any fails, the
    others still complete (as those before it did one after the other) and the first failure
    is raised (a fenced producer crashes the app, as in Faust).
    """

    async def commit_transactions(
        self,
        tid_to_offset_map: Mapping[str, Mapping[TP, int]],
        group_id: str,
        start_new_transaction: bool = True,
    ) -> None:
        outcomes = await asyncio.gather(
            *(
                self._commit_one(tid, offsets, group_id, start_new_transaction)
                for tid, offsets in tid_to_offset_map.items()
            ),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            # a real failure before a cancellation (which only says another task gave up)
            failures.sort(key=lambda e: isinstance(e, asyncio.CancelledError))
            raise failures[0]

    async def _commit_one(
        self,
        transactional_id: str,
        offsets: Mapping[TP, int],
        group_id: str,
        start_new_transaction: bool,
    ) -> None:
        """Faust's commit of one transaction, as its ``commit_transactions`` does it: under that
        transactional id's lock, the offsets sent into the transaction, the transaction
        committed, the next one begun."""
        app: Any = self.app
        async with transaction_lock(app, transactional_id):
            txp = transaction_producer(app, transactional_id)
            if txp is None:
                logger.warning("Commit invoked for unknown transaction %s", transactional_id)
                return
            await txp.send_offsets_to_transaction(offsets, group_id)
            await txp.commit_transaction()
            if start_new_transaction:
                await txp.begin_transaction()


class LeanTransport(faust_aiokafka.Transport):
    Consumer = LeanConsumer
    Producer = LeanProducer


class SegflowApp(faust.App):
    """A Faust app whose consumer is :class:`LeanConsumer` and whose table manager is
    :class:`SegflowTableManager`.

    ``batch_sink``, when set, receives the fetched messages of ``batch_topics`` instead of the
    conductor, one list per fetch; ``rebalance_listener``, when set, hears of each rebalance;
    ``commit_watch``, when set, has partitions whose commits are stuck read again (and
    ``commit_stall_listener`` hears of each); ``skipped_fetch_listener``, when set, hears of
    each hole the consumer read again before delivering what followed it.
    """

    batch_sink: BatchSink | None = None
    batch_topics: frozenset[str] = frozenset()
    rebalance_listener: RebalanceListener | None = None
    commit_watch: CommitWatch | None = None
    commit_stall_listener: CommitStallListener | None = None
    skipped_fetch_listener: SkippedFetchListener | None = None
    #: the worker consumer's fetch size: bytes a fetch waits for, at most this long (ms)
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 1500

    def __init__(self, id: str, **options: Any) -> None:
        super().__init__(id, TableManager=SegflowTableManager, **options)

    def _new_transport(self) -> Any:
        return LeanTransport(self.conf.broker_consumer, self)


# -- the start-up check ------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One private member the processors rely on: where, which, and what kind."""

    owner: str
    name: str
    kind: str  # "method", "coroutine", or "attribute"
    types: tuple[type, ...] = ()


def _members(app: faust.App) -> list[tuple[Any, Member]]:
    """Every private member this module touches, with the object it is looked up on."""
    producer: Any = app.producer
    consumer: Any = app.consumer
    store: Any = next(iter(app.tables.values())).data if app.tables else None
    return [
        (
            producer,
            Member("faust aiokafka Producer", "_transaction_producers", "attribute", (dict,)),
        ),
        (producer, Member("faust aiokafka Producer", "_trn_locks", "attribute", (dict,))),
        (producer, Member("faust aiokafka Producer", "_ensure_producer", "method")),
        (producer, Member("faust aiokafka Producer", "abort_transaction", "coroutine")),
        (producer, Member("faust aiokafka Producer", "begin_transaction", "coroutine")),
        (
            faust_aiokafka.Producer,
            Member("faust aiokafka Producer", "commit_transactions", "coroutine"),
        ),
        (store, Member("faust memory Store", "data", "attribute", (dict,))),
        (store, Member("faust memory Store", "_key_partition", "attribute", (dict,))),
        (
            faust_aiokafka.Consumer,
            Member("faust aiokafka Consumer", "_drain_messages", "coroutine"),
        ),
        (faust.App, Member("faust App", "_new_transport", "method")),
        (
            consumer,
            Member(
                "faust Consumer", "_thread", "attribute", (faust_aiokafka.AIOKafkaConsumerThread,)
            ),
        ),
        (
            faust_aiokafka.AIOKafkaConsumerThread,
            Member("faust AIOKafkaConsumerThread", "_ensure_consumer", "method"),
        ),
        (
            faust_aiokafka.AIOKafkaConsumerThread,
            Member("faust AIOKafkaConsumerThread", "call_thread", "coroutine"),
        ),
        (consumer, Member("faust Consumer", "_stopped", "attribute", (ModeEvent,))),
        (consumer, Member("faust Consumer", "_read_offset", "attribute", (dict,))),
        (consumer, Member("faust Consumer", "_commit_every", "attribute", (int, type(None)))),
        (consumer, Member("faust Consumer", "_n_acked", "attribute", (int,))),
        (consumer, Member("faust Consumer", "_committed_offset", "attribute", (dict,))),
        (faust_consumer.Consumer, Member("faust Consumer", "_new_offset", "method")),
        (
            faust_aiokafka.AIOKafkaConsumerThread,
            Member("faust AIOKafkaConsumerThread", "seek_wait", "coroutine"),
        ),
        (
            faust_aiokafka.Consumer,
            Member("faust aiokafka Consumer", "seek_to_committed", "coroutine"),
        ),
        (consumer, Member("faust Consumer", "_acked_index", "attribute", (dict,))),
        (consumer, Member("faust Consumer", "_acked", "attribute", (dict,))),
        (consumer, Member("faust Consumer", "_unacked_messages", "attribute", (WeakSet,))),
        (consumer, Member("faust Consumer", "_waiting_for_ack", "attribute", ())),
        (faust_tuples, Member("faust.types.tuples", "ack_lock", "attribute", (RLockType,))),
        (consumer, Member("faust Consumer", "_buffered_partitions", "attribute", (set,))),
        (consumer, Member("faust Consumer", "_paused_partitions", "attribute", (set,))),
        (
            consumer,
            Member("faust Consumer", "_active_partitions", "attribute", (set, type(None))),
        ),
        (consumer, Member("faust Consumer", "_add_gap", "coroutine")),
        (consumer, Member("faust Consumer", "_to_message", "method")),
        (consumer, Member("faust Consumer", "_wait_next_records", "coroutine")),
        (consumer, Member("faust Consumer", "earliest_offsets", "coroutine")),
        (faust_consumer.Fetcher, Member("faust Fetcher", "_stopped", "service event", ())),
        (TableManager, Member("faust TableManager", "on_rebalance", "coroutine")),
        (TableManager, Member("faust TableManager", "_recovery", "attribute", ())),
        (Recovery, Member("faust Recovery", "on_recovery_completed", "coroutine")),
        (app.tables, Member("faust TableManager", "recovery", "attribute", ())),
    ]


def _problem(obj: Any, member: Member) -> str | None:
    """What is wrong with `member` on `obj`, None when it is as expected."""
    if member.kind == "service event":  # set on each instance by mode.Service.__init__
        ok = isinstance(obj, type) and issubclass(obj, mode.Service)
        return None if ok else "is no longer a mode.Service"
    if obj is None:
        return "cannot be looked up (no table)"
    try:
        value = inspect.getattr_static(obj, member.name)
    except AttributeError:
        return "is missing"
    if member.kind == "method":
        return None if callable(value) else "is not a method"
    if member.kind == "coroutine":
        return None if inspect.iscoroutinefunction(value) else "is not a coroutine function"
    value = getattr(obj, member.name)
    if member.types and not isinstance(value, member.types):
        expected = " or ".join(t.__name__ for t in member.types)
        return f"is a {type(value).__name__}, not a {expected}"
    return None


def check(app: faust.App) -> None:
    """Verify the Faust install before the worker consumes anything; FaustSeamError if not.

    The version must be one of :data:`SUPPORTED_FAUST_VERSIONS`, and each private member this
    module touches must exist with its expected kind. Builds the app's producer and consumer
    objects (no connection is made); since the consumer fixes at construction whether it uses
    transactions (Faust's ``App.in_transaction`` holds only in a worker), the app is first
    marked as running in a worker, as ``faust.Worker`` does when it starts, and the consumer is
    checked to use transactions exactly when the guarantee is exactly_once.
    """
    app.in_worker = True
    version = faust_version()
    if version not in SUPPORTED_FAUST_VERSIONS:
        raise FaustSeamError(
            f"faust-streaming {version} is installed; segflow's processors support "
            f"{', '.join(sorted(SUPPORTED_FAUST_VERSIONS))} (they rely on private Faust members "
            "listed in processors/faust_seam.py): install the pinned version"
        )
    app_type = type(app)
    if not issubclass(app_type, SegflowApp) or type(app.consumer) is not LeanConsumer:
        raise FaustSeamError("the processors' app must be a SegflowApp with a LeanConsumer")
    if not isinstance(app.tables, SegflowTableManager):
        raise FaustSeamError(
            f"faust-streaming {version}: the app's table manager is "
            f"{type(app.tables).__name__}, not SegflowTableManager (setting TableManager ignored)"
        )
    exactly_once = (
        app.conf.processing_guarantee == faust.types.enums.ProcessingGuarantee.EXACTLY_ONCE
    )
    if app.consumer.in_transaction != exactly_once:
        raise FaustSeamError(
            f"faust-streaming {version}: the consumer's in_transaction is "
            f"{app.consumer.in_transaction} under processing_guarantee "
            f"{app.conf.processing_guarantee}: it was built before the app was in a worker"
        )
    for obj, member in _members(app):
        problem = _problem(obj, member)
        if problem is not None:
            raise FaustSeamError(
                f"faust-streaming {version}: {member.owner}.{member.name} {problem} (expected a "
                f"{member.kind}); segflow's processors rely on it (processors/faust_seam.py): "
                "install the pinned faust-streaming version"
            )


__all__ = [
    "SUPPORTED_FAUST_VERSIONS",
    "TP",
    "BatchSink",
    "FaustSeamError",
    "LeanConsumer",
    "LeanTransport",
    "SegflowApp",
    "SegflowTableManager",
    "ack_all",
    "check",
    "consumer_view",
    "forget_store_partition",
    "forget_transaction_producer",
    "plain_producer",
    "restart_transaction",
    "take_recovered",
    "transaction_lock",
    "transaction_producer",
]
