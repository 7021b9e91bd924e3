"""The start-up check of every private Faust member the processors rely on, on a real Faust app
(built offline: no broker is reached), and the clear failure when one is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from faust.tables.manager import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from prometheus_client import CollectorRegistry

from cli.commands import process as process_command
from processors import faust_seam
from processors.app import ProcessorApp
from processors.app_config import TopicLayout
from processors.faust_seam import (
    FaustSeamError,
    LeanConsumer,
    LeanProducer,
    SegflowTableManager,
)
from processors.settings import ProcessorSettings
from runtime.health import HealthState
from runtime.rules import load_rules
from runtime.settings import KafkaSettings
from schemas.errors import FatalError
from tests.unit.clock import ManualClock


def settings(tmp_path: Path) -> ProcessorSettings:
    return ProcessorSettings(
        kafka=KafkaSettings(topic_prefix="seam."),
        app_id="seam-app",
        state_dir=tmp_path,
        pii_hmac_key="seam-test-key-0123456789abcdef0123456789",
    )


def processor(tmp_path: Path) -> ProcessorApp:
    s = settings(tmp_path)
    layout = TopicLayout(3, {t: 3 for t in s.kafka.topics.all_clean()})
    return ProcessorApp(s, load_rules(None), CollectorRegistry(), layout)


def test_the_check_passes_on_the_processors_real_faust_app(tmp_path: Path) -> None:
    proc = processor(tmp_path)
    faust_seam.check(proc.app)
    assert type(proc.app.consumer) is LeanConsumer
    assert type(proc.app.producer) is LeanProducer
    assert isinstance(proc.app.tables, SegflowTableManager)
    watch = proc.app.commit_watch
    assert watch is not None and watch.stall_s == settings(tmp_path).commit_stall_s == 15.0
    assert proc.app.commit_stall_listener is not None
    assert faust_seam.faust_version() in faust_seam.SUPPORTED_FAUST_VERSIONS


@pytest.mark.parametrize(
    ("owner", "name", "replacement", "problem"),
    [
        (faust_aiokafka.Producer, "_trn_locks", None, "is missing"),
        (faust_aiokafka.Producer, "_ensure_producer", None, "is missing"),
        (faust_aiokafka.Consumer, "_drain_messages", None, "is missing"),
        (faust_aiokafka.AIOKafkaConsumerThread, "_ensure_consumer", None, "is missing"),
        (faust_aiokafka.Producer, "_transaction_producers", [], "is a list, not a dict"),
        (
            faust_aiokafka.Consumer,
            "_wait_next_records",
            lambda self, timeout: None,
            "is not a coroutine function",
        ),
    ],
)
def test_a_missing_or_changed_member_fails_naming_it_and_the_version(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    owner: type,
    name: str,
    replacement: object,
    problem: str,
) -> None:
    proc = processor(tmp_path)
    if replacement is None:
        for klass in owner.__mro__:  # gone from the class and every base it could come from
            if name in vars(klass):
                monkeypatch.delattr(klass, name)
    else:
        monkeypatch.setattr(owner, name, replacement)
    with pytest.raises(FaustSeamError) as caught:
        faust_seam.check(proc.app)
    message = str(caught.value)
    assert f".{name} {problem}" in message
    assert f"faust-streaming {faust_seam.faust_version()}" in message
    assert isinstance(caught.value, FatalError)


def test_an_unsupported_faust_version_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = processor(tmp_path)
    monkeypatch.setattr(faust_seam, "faust_version", lambda: "0.99.0")
    with pytest.raises(FaustSeamError, match=r"faust-streaming 0\.99\.0 is installed.*0\.15\.3"):
        faust_seam.check(proc.app)


def test_the_worker_stops_before_consuming_when_the_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`segflow process` runs the check before the worker (and its health server) starts."""
    monkeypatch.delattr(faust_aiokafka.Producer, "_trn_locks")
    started: list[object] = []
    monkeypatch.setattr(process_command.faust, "Worker", lambda *a, **k: started.append(a))
    s = settings(tmp_path)
    layout = TopicLayout(3, {t: 3 for t in s.kafka.topics.all_clean()})
    with pytest.raises(FaustSeamError, match="_trn_locks"):
        process_command._serve(s, load_rules(None), layout, HealthState(), None)
    assert not started


def test_the_table_manager_tells_the_app_of_a_rebalance_before_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener runs first, and the changelog partitions it names are passed on to Faust's
    table manager as revoked too (so recovery reads them from their start)."""
    proc = processor(tmp_path)
    app = proc.app
    order: list[str] = []
    extra = TP(proc.changelog_topic["dedupe"], 1)

    async def listener(assigned: set[TP], revoked: set[TP], generation: int) -> set[TP]:
        order.append(f"listener {sorted(revoked)} {generation}")
        return {extra}

    async def faust_on_rebalance(
        self: TableManager,
        assigned: set[TP],
        revoked: set[TP],
        newly: set[TP],
        generation_id: int = 0,
    ) -> None:
        order.append(f"faust {sorted(revoked)} {generation_id}")

    monkeypatch.setattr(TableManager, "on_rebalance", faust_on_rebalance)
    app.rebalance_listener = listener
    gone = TP(proc.topics.raw("track"), 2)
    asyncio.run(app.tables.on_rebalance(set(), {gone}, set(), 7))
    assert order == [f"listener {[gone]} 7", f"faust {sorted({gone, extra})} 7"]


def test_a_consumer_built_outside_a_worker_fails_the_check(tmp_path: Path) -> None:
    """Faust fixes at the consumer's construction whether it uses transactions (only in a
    worker): one built earlier would run exactly-once without transactions."""
    proc = processor(tmp_path)
    assert proc.app.consumer is not None  # built before the app is marked in a worker
    with pytest.raises(FaustSeamError, match="in_transaction is False"):
        faust_seam.check(proc.app)


def _record(tp: TP, offset: int) -> Any:
    """A record of `tp` as the Kafka client delivers it."""
    from aiokafka.structs import ConsumerRecord

    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"v", None, 1, 1, ())


def _run_fetch_loop(
    consumer: Any,
    wait_next_records: Callable[[float], Awaitable[tuple[dict[TP, list[Any]], set[TP]]]],
    stopped: Callable[[], bool],
) -> None:
    """Run the consumer's fetch loop on the fetches `wait_next_records` gives, until
    `stopped()` (Faust's fetcher: its stop event)."""

    class Fetcher:
        class _stopped:
            is_set = staticmethod(stopped)

    consumer._wait_next_records = wait_next_records
    asyncio.run(asyncio.wait_for(consumer._drain_messages(Fetcher()), 5))


def test_a_seek_during_a_blocked_hand_over_is_not_undone(tmp_path: Path) -> None:
    """The fetch loop hands a fetch to the agent's queue, which may block (queue full, flow
    suspended) across a rebalance. The rebalance ends by seeking the partitions back to their
    committed offsets; the fetch loop must not then move the read offset forward to the end of
    the fetch it was handing over: the records read again from the committed offset would be
    skipped as already read, never processed nor acked, and the partition's offsets would
    never be committed again (or, with no offset committed yet, committed past them)."""
    proc = processor(tmp_path)
    app = proc.app
    consumer = app.consumer
    assert isinstance(consumer, LeanConsumer)
    tp = TP(proc.topics.raw("track"), 1)
    app.batch_topics = frozenset({tp.topic})
    app.consumer_generation_id = 3

    def records(first: int, n: int) -> list[Any]:
        return [_record(tp, o) for o in range(first, first + n)]

    fetches = [records(100, 50), records(40, 110)]  # before the seek; then from offset 40
    delivered: list[list[int]] = []

    async def wait_next_records(timeout: float) -> tuple[dict[TP, list[Any]], set[TP]]:
        await asyncio.sleep(0)
        if not fetches:
            return {}, {tp}
        return {tp: fetches.pop(0)}, {tp}

    async def sink(batch: list[Any]) -> None:
        delivered.append([m.offset for m in batch])
        if len(delivered) == 1:
            # blocked in the queue while a rebalance seeks the partition back to offset 40
            consumer._read_offset[tp] = 40
            consumer._committed_offset[tp] = 40

    consumer.highwater = lambda tp: 150  # type: ignore[method-assign]
    app.batch_sink = sink
    _run_fetch_loop(consumer, wait_next_records, lambda: not fetches and len(delivered) == 2)
    assert delivered[0] == list(range(100, 150))
    assert delivered[1] == list(range(40, 150)), "records read again after the seek were skipped"
    assert consumer._read_offset[tp] == 149


def test_ack_all_leaves_the_bookkeeping_faust_s_ack_leaves(tmp_path: Path) -> None:
    """`ack_all` is Faust's `Consumer.ack` for many messages under one lock: the same acked
    offsets, index, count and flags, whatever the committed offsets and repeats."""
    from faust.types import Message

    def acked_state(use_ack_all: bool) -> tuple[Any, ...]:
        proc = processor(tmp_path)
        consumer: Any = proc.app.consumer
        topic = proc.topics.raw("track")
        tp0, tp1 = TP(topic, 0), TP(topic, 1)
        proc.app.topics.acks_enabled_for = lambda t: t == topic  # type: ignore[assignment]
        consumer._committed_offset[tp1] = 5
        batch = [Message(topic, p, o, 0.0, 0, [], b"k", b"v", None) for p, o in ((0, 3), (1, 4))]
        batch += [
            Message(topic, p, o, 0.0, 0, [], b"k", b"v", None) for p in (0, 1) for o in range(5, 9)
        ]
        batch[3].acked = True  # acked before (by another route)
        again = Message(topic, 0, 6, 0.0, 0, [], b"k", b"v", None)  # an offset acked twice
        other = Message("no-acks", 0, 9, 0.0, 0, [], b"k", b"v", None)  # a topic without acks
        batch += [again, other]
        if use_ack_all:
            faust_seam.ack_all(consumer, batch)
        else:
            for message in batch:
                consumer.ack(message)
        return (
            {tp: list(consumer._acked[tp]) for tp in (tp0, tp1)},
            {tp: set(consumer._acked_index[tp]) for tp in (tp0, tp1)},
            consumer._n_acked,
            [m.acked for m in batch],
        )

    expected = acked_state(use_ack_all=False)
    assert expected[0][TP(processor(tmp_path).topics.raw("track"), 0)] == [3, 5, 7, 8, 6]
    assert acked_state(use_ack_all=True) == expected


def test_the_commit_watch_names_a_partition_stuck_behind_a_hole_once_per_period() -> None:
    clock = ManualClock(1000.0)
    watch = faust_seam.CommitWatch(30.0, clock)
    tp, other = TP("raw", 0), TP("raw", 1)
    watch.observe(tp, 100, [101, 102])  # the next offset acked (a marker at 100): no hole
    watch.observe(tp, None, [105])  # nothing committed yet: Faust commits past, no stall
    watch.observe(tp, 100, [])  # nothing acked: nothing waits
    clock.now += 100
    watch.observe(tp, 100, [105, 106])
    assert not watch.any_due
    clock.now += 29.9
    watch.observe(tp, 100, [105, 106, 107])
    assert not watch.any_due, "due before the stall lasted stall_s"
    clock.now += 0.2
    watch.observe(tp, 100, [105, 106, 107])
    watch.observe(other, 7, [9])  # first seen now: not due
    assert watch.any_due
    assert watch.take_due() == {tp: (100, 105)}
    assert not watch.any_due and watch.take_due() == {}
    clock.now += 10
    watch.observe(tp, 100, [105])
    assert not watch.any_due, "due again before another stall_s without progress"
    clock.now += 25
    watch.observe(tp, 100, [105])
    assert watch.take_due() == {tp: (100, 105)}
    # progress: the committed offset moved, or an offset became committable
    clock.now += 5
    watch.observe(tp, 120, [125])
    clock.now += 29
    watch.observe(tp, 120, [125])
    assert not watch.any_due
    watch.moved(tp)
    clock.now += 29
    watch.observe(tp, 120, [125])
    assert not watch.any_due


def test_a_partition_whose_commits_are_stuck_is_read_again_from_its_committed_offset(
    tmp_path: Path,
) -> None:
    """Faust's commit finds nothing to commit while offsets 100-104 were read but never acked
    and 105-109 were: the partition's commits would stay stuck for good. After `stall_s`, the
    fetch loop seeks it back to the committed offset (and tells the listener); once the records
    read again are acked, the commit goes past the hole."""
    from faust.types import Message

    proc = processor(tmp_path)
    app = proc.app
    consumer: Any = app.consumer
    assert isinstance(consumer, LeanConsumer)
    topic = proc.topics.raw("track")
    tp, gone = TP(topic, 1), TP(topic, 2)
    app.topics.acks_enabled_for = lambda t: t == topic  # type: ignore[assignment]
    clock = ManualClock(1000.0)
    app.commit_watch = faust_seam.CommitWatch(30.0, clock)
    heard: list[tuple[TP, int, int]] = []
    app.commit_stall_listener = lambda *a: heard.append(a)
    for part in (tp, gone):
        consumer._committed_offset[part] = 100
        faust_seam.ack_all(
            consumer,
            [
                Message(topic, part.partition, o, 0.0, 0, [], b"k", b"v", None)
                for o in range(105, 110)
            ],
        )
    assert consumer._filter_committable_offsets([tp, gone]) == {}
    clock.now += 31
    assert consumer._filter_committable_offsets([tp, gone]) == {}
    assert app.commit_watch.any_due

    seeks: list[dict[TP, int]] = []
    loops = [0]

    async def seek_wait(partitions: Mapping[TP, int]) -> None:
        seeks.append(dict(partitions))

    async def wait_next_records(timeout: float) -> tuple[dict[TP, list[Any]], set[TP]]:
        loops[0] += 1
        await asyncio.sleep(0)
        return {}, {tp}

    thread: Any = consumer._thread
    thread.seek_wait = seek_wait
    consumer.assignment = lambda: {tp}  # type: ignore[method-assign]  # `gone` was revoked
    _run_fetch_loop(consumer, wait_next_records, lambda: loops[0] >= 2)
    assert seeks == [{tp: 100}]
    assert heard == [(tp, 100, 105)]
    assert not app.commit_watch.any_due
    # the records read again are processed and acked: the commit goes past the hole
    faust_seam.ack_all(
        consumer, [Message(topic, 1, o, 0.0, 0, [], b"k", b"v", None) for o in range(100, 110)]
    )
    assert consumer._filter_committable_offsets([tp]) == {tp: 110}


def test_the_commit_watch_names_a_partition_whose_records_wait_with_nothing_acked() -> None:
    """Records waiting (high watermark two or more above the committed offset), nothing acked,
    committed or delivered for stall_s: due. Acks, a commit, a delivery or a settling reset."""
    clock = ManualClock(1000.0)
    watch = faust_seam.CommitWatch(15.0, clock)
    tp, idle, marker, fresh = TP("raw", 0), TP("raw", 1), TP("raw", 2), TP("raw", 3)

    def look(acked: bool = False, committed: int = 100) -> None:
        watch.check_waiting(
            {
                tp: (committed, acked, 300),
                idle: (50, False, 50),  # caught up
                marker: (70, False, 71),  # a transaction marker at the end
                fresh: (None, False, 40),  # nothing committed yet
            }
        )

    look()
    clock.now += 14.9
    look()
    assert not watch.any_due
    clock.now += 0.1
    look()
    assert watch.take_due() == {tp: (100, 300)}, "only the partition whose records wait"
    clock.now += 60
    look()
    assert not watch.any_due, "read again at the same offsets: delivered nothing, not again"
    watch.check_waiting({tp: (100, False, 301)})  # a new record: worth another read
    clock.now += 15
    watch.check_waiting({tp: (100, False, 301)})
    assert watch.take_due() == {tp: (100, 301)}


@pytest.mark.parametrize("reset", ["acks", "commit", "delivery", "settling"])
def test_progress_starts_the_clock_of_waiting_records_again(reset: str) -> None:
    clock = ManualClock(1000.0)
    watch = faust_seam.CommitWatch(15.0, clock)
    tp = TP("raw", 0)
    committed = 100
    watch.check_waiting({tp: (committed, False, 300)})
    clock.now += 10
    if reset == "acks":
        watch.check_waiting({tp: (committed, True, 300)})
    elif reset == "commit":
        committed = 101
    elif reset == "delivery":
        watch.received(tp, 150)
    else:
        watch.settling()
    watch.check_waiting({tp: (committed, False, 300)})
    clock.now += 14.9
    watch.check_waiting({tp: (committed, False, 300)})
    assert not watch.any_due
    clock.now += 0.1
    watch.check_waiting({tp: (committed, False, 300)})
    assert watch.take_due() == {tp: (committed, 300)}


def test_a_long_gap_between_looks_starts_the_clocks_again() -> None:
    clock = ManualClock(1000.0)
    watch = faust_seam.CommitWatch(15.0, clock)
    tp = TP("raw", 0)

    def look_each_second(seconds: int) -> None:
        for _ in range(seconds):
            clock.now += 1
            if watch.due_for_a_look():
                watch.check_waiting({tp: (100, False, 300)})

    assert watch.due_for_a_look()
    watch.check_waiting({tp: (100, False, 300)})
    clock.now += 0.5
    assert not watch.due_for_a_look(), "once a second"
    look_each_second(10)
    clock.now += 20  # the loop waited on a full batch queue: nothing was fetched meanwhile
    look_each_second(14)
    assert not watch.any_due
    look_each_second(2)
    assert watch.take_due() == {tp: (100, 300)}


class _Txn:
    """A transactional producer whose commit waits for `release`; `fail` raises instead."""

    def __init__(self, log: list[str], name: str, release: asyncio.Event, fail: bool) -> None:
        self.log, self.name, self.release, self.fail = log, name, release, fail
        self.offsets: Mapping[TP, int] | None = None

    async def send_offsets_to_transaction(self, offsets: Mapping[TP, int], group: str) -> None:
        self.offsets = offsets
        self.log.append(f"{self.name} offsets")

    async def commit_transaction(self) -> None:
        await self.release.wait()
        if self.fail:
            raise RuntimeError(f"{self.name} fenced")
        self.log.append(f"{self.name} committed")

    async def begin_transaction(self) -> None:
        self.log.append(f"{self.name} begun")


def test_a_commit_commits_every_transaction_side_by_side_and_raises_the_first_failure() -> None:
    """Every transaction's offsets go in before any commit ends (not one id after the other);
    a failing one does not stop the others, and its error is raised."""

    async def run() -> None:
        log: list[str] = []
        release = asyncio.Event()
        names = ["app-0-0", "app-0-1", "app-0-2"]
        txps = {n: _Txn(log, n, release, fail=n == "app-0-1") for n in names}
        producer: Any = type("P", (), {"_commit_one": LeanProducer._commit_one})()
        producer.app = type("A", (), {"producer": producer})()
        producer._transaction_producers = txps
        producer._trn_locks = {n: asyncio.Lock() for n in names}
        offsets = {n: {TP("raw", i): 10 * i} for i, n in enumerate(names)}
        task = asyncio.ensure_future(LeanProducer.commit_transactions(producer, offsets, "app"))
        await asyncio.sleep(0.01)
        assert log == [f"{n} offsets" for n in names]  # all waiting in their commit at once
        assert all(producer._trn_locks[n].locked() for n in names)
        release.set()
        with pytest.raises(RuntimeError, match="app-0-1 fenced"):
            await asyncio.wait_for(task, 5)
        for n in ("app-0-0", "app-0-2"):
            assert log.index(f"{n} committed") < log.index(f"{n} begun")
        assert "app-0-1 committed" not in log and "app-0-1 begun" not in log
        assert txps["app-0-2"].offsets == {TP("raw", 2): 20}
        assert not any(lock.locked() for lock in producer._trn_locks.values())

    asyncio.run(run())


def test_the_worker_consumer_fetches_with_the_configured_size(tmp_path: Path) -> None:
    """Faust builds its worker consumer with 1 byte and 1.5 s; the seam's consumer thread sets
    the settings' fetch size on it before it starts (no broker is reached: built, not
    started)."""
    s = settings(tmp_path).model_copy(update={"fetch_min_bytes": 123_456, "fetch_max_wait_ms": 42})
    layout = TopicLayout(3, {t: 3 for t in s.kafka.topics.all_clean()})
    proc = ProcessorApp(s, load_rules(None), CollectorRegistry(), layout)
    thread = proc.app.consumer._thread  # type: ignore[attr-defined]
    assert isinstance(thread, faust_seam.LeanConsumerThread)

    async def build() -> Any:
        return thread._create_worker_consumer(proc.app.transport)

    consumer = asyncio.run(build())
    assert (consumer._fetch_min_bytes, consumer._fetch_max_wait_ms) == (123_456, 42)
    defaults = ProcessorSettings.model_fields  # Faust's own values unless set
    assert defaults["fetch_min_bytes"].default == 1
    assert defaults["fetch_max_wait_ms"].default == 1500


def test_a_consumer_without_the_fetch_attributes_fails_naming_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = processor(tmp_path)
    thread = proc.app.consumer._thread  # type: ignore[attr-defined]

    class Bare:
        pass

    monkeypatch.setattr(
        faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", lambda self, t: Bare()
    )
    with pytest.raises(FaustSeamError, match="_fetch_min_bytes"):
        thread._create_worker_consumer(proc.app.transport)


def _drain_fetches(
    tmp_path: Path,
    fetches: Sequence[list[int] | tuple[list[int], list[int]]],
    expected: int | None,
    expected_generation: int = 2,
    read_offset: int | None = None,
) -> tuple[Any, TP, list[list[int]], list[dict[TP, int]]]:
    """Run the fetch loop over `fetches` (each a list of offsets of one raw partition, or a
    pair: those and the offsets of another partition fetched with them), the partition's next
    offset being `expected`; returns the consumer, the partition, the offsets
    delivered per batch and the seeks made. A seek makes the next fetch start where it sought,
    as the client does, unless that fetch is given explicitly."""
    proc = processor(tmp_path)
    app = proc.app
    consumer: Any = app.consumer
    assert isinstance(consumer, LeanConsumer)
    tp, other = TP(proc.topics.raw("identify"), 1), TP(proc.topics.raw("identify"), 2)
    app.batch_topics = frozenset({tp.topic})
    app.consumer_generation_id = 2
    consumer.expected_generation = expected_generation
    if read_offset is not None:  # as a seek leaves it: the next offset to read
        consumer._read_offset[tp] = read_offset
    if expected is not None:
        consumer.expected[tp] = expected
    pending = list(fetches)
    delivered: list[list[int]] = []
    seeks: list[dict[TP, int]] = []
    loops = [0]
    app.skipped_fetch_listener = lambda *heard: seeks.append({"heard": heard})  # type: ignore[dict-item]

    async def wait_next_records(timeout: float) -> tuple[dict[TP, list[Any]], set[TP]]:
        loops[0] += 1
        await asyncio.sleep(0)
        if not pending:
            return {}, {tp}
        item = pending.pop(0)
        mine, others = item if isinstance(item, tuple) else (item, [])
        fetched = {
            part: [_record(part, o) for o in offsets]
            for part, offsets in ((tp, mine), (other, others))
            if part == tp or offsets
        }
        return fetched, {tp, other}

    async def seek_wait(partitions: Mapping[TP, int]) -> None:
        seeks.append(dict(partitions))
        for part, offset in partitions.items():
            consumer._read_offset[part] = offset if offset > 0 else None

    async def sink(batch: list[Any]) -> None:
        offsets = [m.offset for m in batch if m.partition == tp.partition]
        if offsets:
            delivered.append(offsets)

    consumer._thread.seek_wait = seek_wait  # type: ignore[method-assign]
    consumer.highwater = lambda tp: 1000  # type: ignore[method-assign]
    app.batch_sink = sink
    _run_fetch_loop(consumer, wait_next_records, lambda: not pending or loops[0] > 20)
    return consumer, tp, delivered, seeks


def test_a_fetch_past_the_next_offset_is_not_delivered_and_read_again_from_it(
    tmp_path: Path,
) -> None:
    """Offsets 100-104 were fetched and dropped with no seek back (the client's position past
    them): the next fetch starts at 105. Delivered, 105-109 would be processed before 100-104
    (a shared device's identify refused behind later ones). The fetch is held back, the
    partition sought back to 100 and delivered from there, in order."""
    consumer, tp, delivered, seeks = _drain_fetches(
        tmp_path, [list(range(105, 110)), list(range(100, 112))], expected=100
    )
    assert seeks == [{tp: 100}, {"heard": (tp, 100, 105)}]  # the seek, then the hole heard of
    assert delivered == [list(range(100, 112))]
    assert consumer.expected[tp] == 112
    assert consumer._read_offset[tp] == 111


def test_a_genuine_gap_is_delivered_once_read_again(tmp_path: Path) -> None:
    """Offsets 100-104 hold no record a read_committed consumer gets (a transaction's
    aborted records and marker): reading again from 100 starts at 105 once more, which is
    delivered; the next gap is checked anew."""
    consumer, tp, delivered, seeks = _drain_fetches(
        tmp_path,
        [[105, 106], [105, 106], [107], [109, 110], [109, 110], [111]],
        expected=100,
    )
    assert seeks == [{tp: 100}, {tp: 108}]
    assert delivered == [[105, 106], [107], [109, 110], [111]]
    assert consumer.expected[tp] == 112


def test_a_fetch_at_or_before_the_next_offset_is_delivered(tmp_path: Path) -> None:
    """No seek when a fetch starts where expected, when it repeats records (read again after
    a seek back), and while nothing is expected (no seek known yet); one that delivers
    nothing moves nothing."""
    for fetches, expected, offsets in (
        ([[100, 101], [102, 103]], 100, [100, 101, 102, 103]),
        # the records before the last one read are skipped as read (as before the seam)
        ([[100, 101], [98, 99, 100, 101, 102]], 100, [100, 101, 101, 102]),
        ([[500, 501]], None, [500, 501]),
        ([[100, 101], [], [100]], 100, [100, 101]),
    ):
        consumer, tp, delivered, seeks = _drain_fetches(tmp_path, fetches, expected)
        assert seeks == []
        assert [o for b in delivered for o in b] == offsets
        assert consumer.expected[tp] == offsets[-1] + 1


def test_after_seeking_to_the_committed_offsets_records_are_expected_there(
    tmp_path: Path,
) -> None:
    """After a rebalance's seek, each raw partition's next record is expected at its committed
    offset; at its log start with none committed (aiokafka leaves the client's position there
    alone, possibly past records a rebalance dropped), at 0 for 0. A partition the fetch loop
    delivered while the seek ran keeps what that delivery set (a seek back over them, or
    expecting them again, would have them processed twice). No seek of the seam's own;
    changelog partitions are left to table recovery."""
    proc = processor(tmp_path)
    app = proc.app
    consumer: Any = app.consumer
    topic = proc.topics.raw("identify")
    fresh, zero, done, gone, busy = (TP(topic, p) for p in range(5))
    changelog = TP("seam-app-identity-changelog", 0)
    app.batch_topics = frozenset({topic})
    app.consumer_generation_id = consumer.expected_generation = 4
    consumer.expected.update({gone: 70, busy: 12})  # an earlier assignment's
    committed = {fresh: None, zero: 0, done: 40, gone: None, busy: 10, changelog: None}
    asked: list[tuple[TP, ...]] = []

    async def seek_to_committed() -> Mapping[TP, Any]:
        consumer.expected[busy] = 15  # delivered while the seek ran
        return committed

    async def earliest_offsets(*partitions: TP) -> Mapping[TP, Any]:
        asked.append(partitions)
        return {fresh: 7, gone: None}

    async def seek_wait(partitions: Mapping[TP, int]) -> None:
        raise AssertionError(f"sought {partitions}")

    thread: Any = consumer._thread
    thread.seek_to_committed = seek_to_committed
    thread.earliest_offsets = earliest_offsets
    thread.seek_wait = seek_wait
    assert asyncio.run(consumer.seek_to_committed()) == committed
    assert asked == [(fresh, gone)]
    assert consumer.expected == {fresh: 7, zero: 0, done: 40, busy: 15}


def test_expected_offsets_of_an_earlier_generation_are_forgotten(tmp_path: Path) -> None:
    """A partition expected at offset 70 in generation 1 (then revoked, and processed
    elsewhere up to 200) is delivered from 200 in generation 2, not read again from 70; its
    next fetch is checked against where that delivery ended."""
    consumer, tp, delivered, seeks = _drain_fetches(
        tmp_path, [[200, 201], [205], [205]], expected=70, expected_generation=1
    )
    assert seeks == [{tp: 202}]
    assert delivered == [[200, 201], [205]]
    assert (consumer.expected_generation, consumer.expected[tp]) == (2, 206)


def test_a_fetch_that_delivers_nothing_moves_nothing(tmp_path: Path) -> None:
    """Sought back to offset 100 (the read offset then names the next offset, not the last
    read), a fetch with nothing of the partition (records of another only) leaves offset 100
    expected: the fetch from 101 after it is a hole of one record, read again."""
    _, tp, delivered, seeks = _drain_fetches(
        tmp_path, [([], [7]), [101, 102], [100, 101, 102]], expected=100, read_offset=100
    )
    assert seeks == [{tp: 100}, {"heard": (tp, 100, 101)}]
    assert delivered == [[100, 101, 102]]
