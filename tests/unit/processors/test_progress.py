"""The progress watchdog's rule: which assigned raw partitions count as stalled, and when."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from processors import app as app_module
from processors import faust_seam
from processors.app import ProcessingStalled
from processors.faust_seam import TP
from processors.progress import ProgressWatch, ProgressWatchdog, Stall, describe_tasks, period_for
from processors.settings import ProcessorSettings
from runtime.settings import build_settings
from schemas.errors import ConfigError
from schemas.topics import PartitionKey
from tests.unit.clock import ManualClock
from tests.unit.processors import fakes

A, B = ("segflow.raw.track", 0), ("segflow.raw.track", 1)


def watch(stall_s: float = 60.0) -> tuple[ProgressWatch, ManualClock]:
    clock = ManualClock(1000.0)
    w = ProgressWatch(stall_s, clock)
    w.assign([A, B])
    return w, clock


def test_a_partition_waiting_at_the_same_offset_for_the_period_is_stalled() -> None:
    w, clock = watch()
    assert w.observe({A: 10, B: 5}, {A: 50, B: 5}) == []
    clock.now += 59.9
    assert w.observe({A: 10, B: 5}, {A: 80, B: 5}) == []
    clock.now += 0.1
    assert w.observe({A: 10, B: 5}, {A: 80, B: 5}) == [Stall(A[0], 0, 10, 80, 60.0)]


def test_a_commit_starts_the_clock_again() -> None:
    w, clock = watch()
    w.observe({A: 10}, {A: 50})
    clock.now += 50
    w.observe({A: 11}, {A: 50})
    clock.now += 50
    assert w.observe({A: 11}, {A: 50}) == []
    clock.now += 10
    assert [s.committed for s in w.observe({A: 11}, {A: 50})] == [11]


def test_one_offset_left_is_a_transaction_marker_not_records_waiting() -> None:
    w, clock = watch()
    for _ in range(5):
        assert w.observe({A: 10}, {A: 11}) == []
        clock.now += 100


def test_caught_up_in_between_starts_the_clock_again() -> None:
    w, clock = watch()
    w.observe({A: 10}, {A: 50})
    clock.now += 40
    w.observe({A: 10}, {A: 10})  # no records waiting: not judged
    clock.now += 40
    assert w.observe({A: 10}, {A: 50}) == []  # waiting again from here


def test_nothing_committed_or_no_end_offset_is_not_judged() -> None:
    w, clock = watch()
    for _ in range(3):
        assert w.observe({A: None}, {}) == []
        assert w.observe({A: -1001, B: 4}, {A: 100}) == []
        clock.now += 100


def test_only_assigned_partitions_are_judged_and_a_rebalance_restarts_the_clocks() -> None:
    w, clock = watch()
    other = ("segflow.raw.page", 0)
    w.observe({A: 10, other: 0}, {A: 50, other: 90})
    clock.now += 59
    w.assign([A, other])
    clock.now += 59
    assert w.observe({A: 10, other: 0}, {A: 50, other: 90}) == []
    clock.now += 60
    assert {(s.topic, s.partition) for s in w.observe({A: 10, other: 0}, {A: 50, other: 90})} == {
        A,
        other,
    }


def test_settling_restarts_the_clocks() -> None:
    w, clock = watch()
    w.observe({A: 10}, {A: 50})
    clock.now += 59
    w.settling()
    clock.now += 59
    assert w.observe({A: 10}, {A: 50}) == []


Offsets = tuple[Mapping[PartitionKey, int | None], Mapping[PartitionKey, int]]


class Broker:
    """What the watchdog reads: set by the test; `fail` makes the read raise."""

    def __init__(self) -> None:
        self.committed: dict[PartitionKey, int | None] = {}
        self.ends: dict[PartitionKey, int] = {}
        self.fail = False
        self.asked: list[frozenset[PartitionKey]] = []

    def read(self, keys: frozenset[PartitionKey]) -> Offsets:
        self.asked.append(keys)
        if self.fail:
            raise OSError("broker unreachable")
        return self.committed, self.ends


def dog(
    broker: Broker, settling: list[bool], stalls: list[list[Stall]]
) -> tuple[ProgressWatchdog, ManualClock]:
    w, clock = watch(stall_s=10)
    return ProgressWatchdog(w, broker.read, lambda: settling[0], stalls.append, 1.0), clock


def test_the_watchdog_reads_only_the_assigned_partitions_and_judges_nothing_while_settling() -> (
    None
):
    broker, settling = Broker(), [True]
    stalls: list[list[Stall]] = []
    d, clock = dog(broker, settling, stalls)
    broker.committed, broker.ends = {A: 10}, {A: 50}
    d.check()
    assert broker.asked == []  # settling: no read
    clock.now += 20
    settling[0] = False
    assert d.check() == []
    clock.now += 10
    assert [s.partition for s in d.check()] == [0]
    assert broker.asked == [frozenset({A, B})] * 2


def test_the_watchdog_gives_no_verdict_when_the_broker_does_not_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, settling = Broker(), [False]
    stalls: list[list[Stall]] = []
    d, clock = dog(broker, settling, stalls)
    broker.committed, broker.ends = {A: 10}, {A: 50}
    d.check()
    broker.fail = True
    for _ in range(3):
        clock.now += 10
        assert d.check() == []
    assert caplog.text.count("the offsets could not be read") == 1
    broker.fail = False
    assert len(d.check()) == 1  # the clock kept running: the committed offset never moved


def test_the_watchdog_thread_reports_the_first_stall_once_and_stops() -> None:
    broker = Broker()
    broker.committed, broker.ends = {A: 10}, {A: 50}
    told = threading.Event()
    stalls: list[list[Stall]] = []

    def on_stall(found: list[Stall]) -> None:
        stalls.append(found)
        told.set()

    w = ProgressWatch(0.05)
    w.assign([A])
    d = ProgressWatchdog(w, broker.read, lambda: False, on_stall, 0.01).start()
    assert told.wait(5)
    assert d._thread is not None
    d._thread.join(5)
    assert not d._thread.is_alive()
    assert len(stalls) == 1 and stalls[0][0].committed == 10
    d.stop()


def test_the_period_is_a_quarter_of_the_stall_within_bounds() -> None:
    assert period_for(120) == 15.0
    assert period_for(20) == 5.0
    assert period_for(2) == 1.0


def test_the_stall_must_outlast_the_stuck_commit_guard() -> None:
    with pytest.raises(
        ValidationError, match=r"progress_stall_s \(10\) must be more than commit_stall_s \(15\)"
    ):
        ProcessorSettings(commit_stall_s=15, progress_stall_s=10)
    assert ProcessorSettings(commit_stall_s=15, progress_stall_s=0).progress_stall_s == 0
    assert ProcessorSettings().progress_stall_s == 120


def test_a_stall_makes_the_worker_unhealthy_and_crashes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    proc = fakes.processor(tmp_path)
    failed: list[BaseException] = []
    monkeypatch.setattr(proc.crash, "fail", failed.append)
    timers: list[float] = []
    monkeypatch.setattr(app_module.threading, "Timer", lambda s, f: FakeTimer(s, timers))
    viewed: list[list[TP]] = []

    async def view(app: Any, tps: list[TP]) -> str:
        viewed.append(tps)
        return "the view"

    monkeypatch.setattr(faust_seam, "consumer_view", view)
    loop = asyncio.new_event_loop()
    try:
        proc.on_stall([Stall(A[0], 0, 10, 50, 121.0), Stall(B[0], 1, 7, 9, 125.0)], loop)
        for _ in range(5):  # the report and the crash run on the event loop
            loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    assert viewed == [[TP(*A), TP(B[0], 1)]]
    assert "the consumer at the stall: the view" in caplog.text
    assert "the worker's tasks at the stall:" in caplog.text
    assert [type(e) for e in failed] == [ProcessingStalled]
    assert proc.health.live is False
    assert timers == [app_module.STALL_EXIT_GRACE_S]
    assert "no progress for 121 s on 2 partitions" in caplog.text
    assert "segflow.raw.track[0] at offset 10 (end 50, 40 waiting)" in caplog.text


class FakeTimer:
    def __init__(self, seconds: float, started: list[float]) -> None:
        self.seconds, self.started, self.daemon = seconds, started, False

    def start(self) -> None:
        self.started.append(self.seconds)


def test_a_rebalance_tells_the_watch_the_raw_partitions_assigned(tmp_path: Path) -> None:
    proc = fakes.processor(tmp_path)
    raw = proc.topics.raw("track")
    changelog = TP(next(iter(proc.changelog_topic.values())), 0)
    asyncio.run(proc._on_rebalance({TP(raw, 0), TP(raw, 2), changelog}, set(), 1))
    assert proc.progress.assigned == {(raw, 0), (raw, 2)}


class Wrapped:
    """An awaitable whose ``__await__`` is a coroutine's (as Faust's actors are)."""

    def __init__(self, coro: Any) -> None:
        self.coro = coro

    def __await__(self) -> Any:
        return self.coro.__await__()


def test_the_tasks_are_described_down_their_await_chains() -> None:
    async def innermost(event: asyncio.Event) -> None:
        await event.wait()

    async def middle(event: asyncio.Event) -> None:
        await Wrapped(innermost(event))

    async def run() -> str:
        event = asyncio.Event()
        task = asyncio.create_task(middle(event), name="the-agent")
        await asyncio.sleep(0)
        text = describe_tasks([task])
        event.set()
        await task
        return text

    text = asyncio.run(run())
    assert text.startswith("the-agent: test_progress.py:")
    names = [part.rsplit(" ", 1)[-1] for part in text.split(" > ")]
    assert names == ["middle", "innermost", "wait"]


def test_a_worker_whose_loop_never_crashes_it_exits_naming_where_its_main_thread_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    proc = fakes.processor(tmp_path)
    codes: list[int] = []
    monkeypatch.setattr(app_module.os, "_exit", codes.append)
    monkeypatch.setattr(app_module.logging, "shutdown", lambda: None)
    proc._exit_stalled()
    assert codes == [1]
    assert "did not stop within 30 s of the stall" in caplog.text
    assert "test_a_worker_whose_loop_never_crashes_it_exits" in caplog.text  # this frame


def test_the_consumer_view_names_each_stalled_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = fakes.processor(tmp_path)
    raw = proc.topics.raw("track")
    consumer: Any = proc.app.consumer
    consumer._paused_partitions = {TP(raw, 1)}
    consumer._read_offset[TP(raw, 0)] = 41
    consumer._committed_offset[TP(raw, 0)] = 40
    consumer._acked[TP(raw, 0)] = [44, 45]
    client = FakeClient(assigned={TP(raw, 0)}, paused={TP(raw, 0)})
    monkeypatch.setattr(consumer._thread, "_ensure_consumer", lambda: client)
    monkeypatch.setattr(consumer, "highwater", lambda tp: 90 + tp.partition)

    async def position(tp: TP) -> int:
        if tp.partition == 1:
            await asyncio.sleep(10)  # no valid position: the view does not wait for it
        return 44

    monkeypatch.setattr(consumer, "position", position)
    view = asyncio.run(faust_seam.consumer_view(proc.app, [TP(raw, 1), TP(raw, 0)], 0.05))
    assert "1 partitions paused" in view
    assert (
        f"{raw}[0]: not paused, not active, read offset 41, committed 40, 2 acked uncommitted; "
        "client: assigned, paused, position 44, high watermark 90" in view
    )
    assert (
        f"{raw}[1]: paused, not active, read offset None, committed None, 0 acked uncommitted; "
        "client: not assigned, not paused, position not known within 0.05 s, high watermark 91"
        in view
    )


class FakeClient:
    """The Kafka client's assignment and paused partitions, as aiokafka's consumer answers."""

    def __init__(self, assigned: set[TP], paused: set[TP]) -> None:
        self._assigned, self._paused = assigned, paused

    def assignment(self) -> set[TP]:
        return self._assigned

    def paused(self) -> set[TP]:
        return self._paused


def test_the_stalls_out_of_order_stop_start_up_with_a_message_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEGFLOW_PROCESS_COMMIT_STALL_S", "20")
    monkeypatch.setenv("SEGFLOW_PROCESS_PROGRESS_STALL_S", "20")
    with pytest.raises(ConfigError) as caught:
        build_settings(ProcessorSettings)
    assert str(caught.value) == (
        "invalid ProcessorSettings: Value error, progress_stall_s (20) must be more than "
        "commit_stall_s (20), so that a partition's stuck commits are healed before the worker "
        "is stopped for making no progress (or 0: never stop)"
    )
