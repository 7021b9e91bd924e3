"""Workers stopped (SIGKILL, SIGTERM), joining and leaving mid-stream: no event lost, none
duplicated on the clean topics (read with isolation.level=read_committed), and the dedupe state
survives.

SEGFLOW_TEST_KILL_AFTER (clean events out before the signal) varies the stop moment when hunting
a race by hand; the default stops the worker a tenth of the way through the stream.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.codec import CLEAN_EVENT, IDENTITY_LINK
from tests.integration.conftest import free_port
from tests.integration.processors_harness import (
    CODEC,
    REPO,
    Env,
    Read,
    TopicReader,
    make_env,
    produce,
    raw_event,
    start_worker,
    stop_worker,
    watermark_end,
)

pytestmark = pytest.mark.integration


class Worker(Protocol):
    """What the tests do with a worker process: a Popen, or a :class:`Supervised` one."""

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


PARTITIONS = 3
EVENTS = 40_000
KILL_AFTER = int(os.environ.get("SEGFLOW_TEST_KILL_AFTER", EVENTS // 10))
COPIES = 300
#: the progress watchdog at 30 s: a worker that stops making progress fails the test in a
#: minute, its log naming where its tasks wait, instead of at the test's timeout
WORKER = {
    "SEGFLOW_PROCESS_SESSION_TIMEOUT_S": "6",
    "SEGFLOW_PROCESS_BATCH_MAX": "500",
    "SEGFLOW_PROCESS_PROGRESS_STALL_S": "30",
}


def make_records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        raw_event(
            "identify" if i % 20 == 0 else "track",
            anonymous_id=f"anon-{i % 997}",
            user_id=f"user-{i % 997}" if i % 20 == 0 else None,
            event=None if i % 20 == 0 else "Order Completed",
            properties={"revenue": i, "email": f"u{i}@example.com"},
            traits={"email": f"u{i}@example.com"},
        )
        for i in range(start, start + n)
    ]


def committed_total(bootstrap: str, group: str, topics: list[str]) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    offsets = consumer.committed(tps, timeout=10)
    consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def end_total(bootstrap: str, topics: list[str]) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    total = 0
    try:
        for t in topics:
            for p in range(PARTITIONS):
                total += watermark_end(consumer, TopicPartition(t, p))
    finally:
        consumer.close()
    return total


def metric_sum(text: str, name: str, label: str = "") -> float:
    """The sum of a metric's samples (those with `label` in their labels)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and label in line.split("}", 1)[0]
    )


def wait_all_committed(env: Env, workers: Sequence[Worker], timeout_s: float, log: Path) -> None:
    """Until the group's committed offsets reach the raw topics' ends (every record decided)."""
    raw_topics = env.topics.all_raw()
    target = end_total(env.bootstrap, raw_topics)
    deadline = time.monotonic() + timeout_s
    while (done := committed_total(env.bootstrap, env.app_id, raw_topics)) < target:
        problem = (
            "a worker died"
            if any(w.poll() is not None for w in workers)
            else "the workers did not finish"
            if time.monotonic() > deadline
            else None
        )
        if problem:
            text = log.read_text(errors="replace")
            stacks = stack_dumps(workers, log)
            raise AssertionError(
                f"{problem}: {done} of {target} committed; the log's end:\n{text[-6000:]}\n"
                f"{stop_report(text)}{stacks}"
            )
        time.sleep(0.5)


def stop_report(text: str) -> str:
    """The last designed stop's report in a worker log: the progress watchdog's (the stall,
    where the tasks waited, what the consumer held) or the recovery check's."""
    start = max(text.rfind("no progress for"), text.rfind("(the restart recovers again)"))
    if start < 0:
        return ""
    start = text.rfind("\n", 0, start) + 1
    end = text.find("Crashed reason=", start)
    return "the stop's report:\n" + text[start : end if end > 0 else start + 20_000] + "\n"


def stack_dumps(workers: Sequence[Worker], log: Path) -> str:
    """What the live workers are doing: each prints the stacks of its threads and asyncio tasks
    to its log on SIGUSR1 (mode's Worker); returns what the log gained meanwhile."""
    live = [w for w in workers if w.poll() is None]
    if not live:
        return ""
    size = log.stat().st_size
    for worker in live:
        worker.send_signal(signal.SIGUSR1)
    time.sleep(3.0)
    with log.open("rb") as f:
        f.seek(size)
        dump = f.read().decode(errors="replace").splitlines()
    # the threads, tasks and their frames, without the local variables mode prints with them
    keep = [
        line
        for i, line in enumerate(dump)
        if line.startswith(("THREAD", "  TASK"))
        or 'File "' in line
        or (i > 0 and 'File "' in dump[i - 1])
    ]
    return "the live workers' stacks (SIGUSR1):\n" + "\n".join(keep)[:60_000]


#: the lines of the worker's designed stops, after which it is to be started again: its
#: progress watchdog's, and the recovery check's (a changelog read nothing from)
RESTART_LINES = ("the worker stops, to be restarted", "(the restart recovers again)")


class Supervised:
    """A worker started again after a designed stop (its log gained one of `RESTART_LINES`), as
    ``segflow up`` and Kubernetes start it again, at most `most` times; each restart is reported
    as a warning carrying the stop's report. Any other exit stays an exit. Stands in for the
    Popen where the tests poll, signal and wait for a worker."""

    def __init__(self, start: Callable[[], subprocess.Popen[bytes]], log: Path, most: int = 2):
        self._start, self._log, self._most = start, log, most
        self._lock = threading.Lock()
        self._seen = self._stops()
        self.restarts = 0
        self.proc = start()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _stops(self) -> int:
        if not self._log.exists():
            return 0
        text = self._log.read_text(errors="replace")
        return sum(text.count(line) for line in RESTART_LINES)

    def _watch(self) -> None:
        while not self._done.wait(0.5):
            self._restart_if_stopped()

    def _restart_if_stopped(self) -> None:
        with self._lock:
            if self.proc.poll() is None or self.restarts >= self._most:
                return
            stops = self._stops()
            if stops <= self._seen:
                return
            self._seen = stops
            self.restarts += 1
            text = self._log.read_text(errors="replace")
            warnings.warn(
                "a designed stop of a worker; started again\n" + stop_report(text), stacklevel=1
            )
            self.proc = self._start()

    def poll(self) -> int | None:
        self._restart_if_stopped()
        with self._lock:
            return self.proc.poll()

    def send_signal(self, sig: int) -> None:
        with self._lock:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        stop_worker(self.proc)


def wait_ready(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the worker on port {port} did not get ready")


def read_clean(env: Env, expected: int) -> list[Read]:
    reader = TopicReader(env.bootstrap, env.topics.all_clean())
    try:
        # every offset is committed, so every transaction is decided: read to the end
        reader.poll_until(lambda rs: len(rs) >= expected, timeout_s=60)
        return reader.poll_until(lambda rs: False, timeout_s=3)
    finally:
        reader.close()


def assert_exactly_once(got: list[Read], expected: set[str]) -> None:
    """Each expected messageId once on the clean topics; where the copies are when not."""
    ids = [CODEC.decode(CLEAN_EVENT, r.value)["messageId"] for r in got]
    counts = Counter(ids)
    copies = [
        (r.topic.rsplit(".", 1)[-1], r.partition, r.offset, i)
        for r, i in zip(got, ids, strict=True)
        if counts[i] > 1
    ]
    assert not copies, (
        f"{len(ids) - len(counts)} duplicates on clean topics, e.g. (topic, partition, offset, "
        f"messageId) {sorted(copies, key=lambda c: c[3])[:12]}; per partition "
        f"{sorted(Counter((c[0], c[1]) for c in copies).items())}"
    )
    assert set(ids) == expected, f"{len(expected - set(ids))} events lost"


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_worker_stopped_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap: str, tmp_path: Path, stop: signal.Signals
) -> None:
    """SIGKILL leaves the worker's last transactions open (the next owner's producers abort
    them); SIGTERM commits them, so the next owner's producers start at once, before its
    consumer has fetched the changelogs (the case that once recovered an empty dedupe state)."""
    env = make_env(kafka_bootstrap, tmp_path, partitions=PARTITIONS)
    records = make_records(EVENTS)
    produce(env.bootstrap, env.topics, records)
    log = tmp_path / "worker.log"

    first = start_worker(env, log, **WORKER)
    watcher = TopicReader(env.bootstrap, env.topics.all_clean())
    try:
        seen = watcher.poll_until(lambda rs: len(rs) >= KILL_AFTER, timeout_s=90)
        assert len(seen) >= KILL_AFTER, "the first worker did not get going"
        first.send_signal(stop)
        first.wait(30)
    finally:
        watcher.close()
        if first.poll() is None:
            first.kill()
    assert len(seen) < EVENTS, "stopped too late to test anything"

    port = free_port()
    second = start_worker(env, log, SEGFLOW_PROCESS_METRICS_PORT=str(port), **WORKER)
    try:
        # copies of events processed before the kill must be dropped by the recovered state
        produce(env.bootstrap, env.topics, [dict(r) for r in records[:COPIES]])
        wait_all_committed(env, [second], timeout_s=180, log=log)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        stop_worker(second)

    assert_exactly_once(read_clean(env, EVENTS), {r["messageId"] for r in records})
    # each clean event seen before the stop was committed with its dedupe entry: all recovered
    recovered = metric_sum(metrics, "segflow_process_recovered_entries_total", 'table="dedupe"')
    assert recovered >= len(seen), f"{recovered:.0f} dedupe entries recovered, {len(seen)} due"
    assert metric_sum(metrics, "segflow_process_duplicates_total") >= COPIES


def test_worker_joining_and_leaving_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Two rebalances while records flow: partitions move to a second worker and back, each
    time rebuilt from the changelogs, with the moving partitions' open transactions aborted.
    Should the first worker stop by design (its progress watchdog, or the check that table
    recovery read its changelogs), it is started again, as in production (a warning carries
    the stop's report); nothing lost or duplicated either way."""
    env = make_env(kafka_bootstrap, tmp_path, partitions=PARTITIONS)
    records = make_records(EVENTS // 2)
    later = make_records(EVENTS // 2, start=EVENTS // 2)
    produce(env.bootstrap, env.topics, records)
    log = tmp_path / "worker.log"
    leave = signal.Signals[os.environ.get("SEGFLOW_TEST_LEAVE_SIGNAL", "SIGTERM")]

    first_port, second_port = free_port(), free_port()
    first = Supervised(
        lambda: start_worker(env, log, SEGFLOW_PROCESS_METRICS_PORT=str(first_port), **WORKER),
        log,
    )
    second: subprocess.Popen[bytes] | None = None
    watcher = TopicReader(env.bootstrap, env.topics.all_clean())
    try:
        seen = watcher.poll_until(lambda rs: len(rs) >= EVENTS // 20, timeout_s=90)
        assert len(seen) >= EVENTS // 20, "the first worker did not get going"
        second = start_worker(env, log, SEGFLOW_PROCESS_METRICS_PORT=str(second_port), **WORKER)
        wait_ready(second_port, timeout_s=90)
        produce(env.bootstrap, env.topics, later)
        count = len(seen)
        seen = watcher.poll_until(lambda rs: len(rs) >= count + EVENTS // 10, timeout_s=90)
        second.send_signal(leave)
        second.wait(30)
        assert len(seen) < EVENTS, "the second worker left too late to test anything"
        produce(env.bootstrap, env.topics, [dict(r) for r in records[:COPIES]])
        wait_all_committed(env, [first], timeout_s=180, log=log)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{first_port}/metrics").read().decode()
    finally:
        watcher.close()
        first.stop()
        if second is not None and second.poll() is None:
            second.kill()
            second.wait()

    assert_exactly_once(read_clean(env, EVENTS), {r["messageId"] for r in records + later})
    if not first.restarts:  # a restarted worker counts only what it saw since
        assert metric_sum(metrics, "segflow_process_duplicates_total") >= COPIES


def start_hooked_worker(
    env: Env, tmp_path: Path, hook_code: str, log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    """`segflow process` with `hook_code` as its sitecustomize module (test-only start-up code
    on its PYTHONPATH, before the repository)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(hook_code)
    return start_worker(env, log, PYTHONPATH=f"{hook}{os.pathsep}{REPO}", **extra)


#: test-only start-up code of the worker (a sitecustomize module on its PYTHONPATH): the first
#: time it reads the records at SEGFLOW_TEST_HOLE_OFFSETS ("40,41", or "40-": from 40 on) of
#: each partition of SEGFLOW_TEST_HOLE_TOPIC, it takes them for stale, as after a rebalance:
#: neither processed nor acked, and not read again unless the consumer seeks back
HOLE_HOOK = """
import os

from processors import batch_agent

_topic = os.environ["SEGFLOW_TEST_HOLE_TOPIC"]
_spec = os.environ["SEGFLOW_TEST_HOLE_OFFSETS"]
if _spec.endswith("-"):  # N-: every offset from N on
    _offsets = range(int(_spec[:-1]), 2**62)
else:
    _offsets = {int(o) for o in _spec.split(",")}
_seen = set()
_dropped = []  # the message objects left out (asked about before processing and before acks)
_current = batch_agent.BatchAgent.current


def current(self, messages):
    kept = []
    for m in _current(self, messages):
        if m.topic == _topic and m.offset in _offsets:
            if any(m is d for d in _dropped):
                continue
            if (m.partition, m.offset) not in _seen:
                _seen.add((m.partition, m.offset))
                _dropped.append(m)
                continue
        kept.append(m)
    return kept


batch_agent.BatchAgent.current = current
"""


@pytest.mark.parametrize("dropped", ["40,41", "40-"], ids=["hole", "tail"])
def test_a_partition_whose_commits_are_stuck_is_read_again_and_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path, dropped: str
) -> None:
    """hole: two records of each partition read and never acked stop Faust's commits of that
    partition for good (the lowest acked offset is more than one above the committed one).
    tail: every record from offset 40 on read once and never acked, nothing acked above them:
    the client's position is at the end, nothing more is fetched or committed. Either way the
    worker notices after SEGFLOW_PROCESS_COMMIT_STALL_S and reads the partition again from its
    committed offset: the records are processed (those processed before dropped as duplicates)
    and every offset is committed; each event once on the clean topics."""
    env = make_env(kafka_bootstrap, tmp_path, partitions=PARTITIONS)
    records = [
        raw_event("track", anonymous_id=f"anon-{i % 50}", event="Order Completed")
        for i in range(900)
    ]
    produce(env.bootstrap, env.topics, records)
    log = tmp_path / "worker.log"
    port = free_port()
    worker = start_hooked_worker(
        env,
        tmp_path,
        HOLE_HOOK,
        log,
        SEGFLOW_TEST_HOLE_TOPIC=env.topics.raw("track"),
        SEGFLOW_TEST_HOLE_OFFSETS=dropped,
        SEGFLOW_PROCESS_COMMIT_STALL_S="2",
        SEGFLOW_PROCESS_METRICS_PORT=str(port),
        **WORKER,
    )
    try:
        wait_all_committed(env, [worker], timeout_s=90, log=log)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        stop_worker(worker)
    text = log.read_text(errors="replace")
    holes = text.count("reading it again from offset 40")
    assert holes == PARTITIONS, f"{holes} partitions read again; the log's end:\n{text[-4000:]}"
    assert metric_sum(metrics, "segflow_process_commit_stalls_total") == PARTITIONS
    assert_exactly_once(read_clean(env, len(records)), {r["messageId"] for r in records})


#: test-only start-up code of the worker (a sitecustomize module on its PYTHONPATH): the first
#: fetch of each partition of SEGFLOW_TEST_LOSE_TOPIC that holds offsets from
#: SEGFLOW_TEST_LOSE_FROM on loses them, as a fetch lost with its cancelled caller: the client's
#: position is past them, and the records were never delivered
LOSE_HOOK = """
import os

from processors import faust_seam

_topic = os.environ["SEGFLOW_TEST_LOSE_TOPIC"]
_from = int(os.environ["SEGFLOW_TEST_LOSE_FROM"])
_lost = set()
_wait_next_records = faust_seam.LeanConsumer._wait_next_records


async def wait_next_records(self, timeout):
    records, active = await _wait_next_records(self, timeout)
    for tp in list(records):
        fetched = records[tp]
        if tp.topic == _topic and tp not in _lost and fetched and fetched[-1].offset >= _from:
            _lost.add(tp)
            records[tp] = [r for r in fetched if r.offset < _from]
            print(f"test hook: lost offsets {_from}..{fetched[-1].offset} of {tp}", flush=True)
    return records, active


faust_seam.LeanConsumer._wait_next_records = wait_next_records
"""


def test_a_lost_fetch_is_read_again_before_the_records_after_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A shared device: identifies of one anonymousId, at most 5 userIds linked to it. The
    fetch holding offsets 40 on is lost (the client's position past them); the identify of a
    sixth user comes after. Processed in order, the sixth is refused. Delivered as fetched, the
    sixth was linked and the gap before it taken for a transaction's marker and aborted
    records: committed past, the lost records were never processed (a reader of the commit
    watch's stall would have processed them after the sixth, refusing a fifth). The worker
    reads the partition again from offset 40 before processing the sixth: the first five are
    linked, the hole counted, every event once."""
    env = make_env(kafka_bootstrap, tmp_path, partitions=PARTITIONS)
    users = ["a"] * 40 + ["b", "c", "d", "e"] + ["e"] * 16  # offsets 0-59 of one partition
    first = [raw_event("identify", anonymous_id="kiosk", user_id=f"u-{u}") for u in users]
    sixth = raw_event("identify", anonymous_id="kiosk", user_id="u-f")
    produce(env.bootstrap, env.topics, first)
    log = tmp_path / "worker.log"
    port = free_port()
    worker = start_hooked_worker(
        env,
        tmp_path,
        LOSE_HOOK,
        log,
        SEGFLOW_TEST_LOSE_TOPIC=env.topics.raw("identify"),
        SEGFLOW_TEST_LOSE_FROM="40",
        SEGFLOW_PROCESS_COMMIT_STALL_S="2",
        SEGFLOW_PROCESS_METRICS_PORT=str(port),
        **WORKER,
    )
    reader = TopicReader(env.bootstrap, [env.topics.identity])
    try:
        deadline = time.monotonic() + 90
        while "test hook: lost offsets 40.." not in log.read_text(errors="replace"):
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        produce(env.bootstrap, env.topics, [sixth])
        wait_all_committed(env, [worker], timeout_s=90, log=log)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        links = reader.poll_until(lambda rs: False, timeout_s=3)
    finally:
        reader.close()
        stop_worker(worker)
    text = log.read_text(errors="replace")
    linked = {
        CODEC.decode(IDENTITY_LINK, r.value)["canonicalUserId"]
        for r in links
        if CODEC.decode(IDENTITY_LINK, r.value)["identifier"] == "kiosk"
    }
    assert linked == {"u-a", "u-b", "u-c", "u-d", "u-e"}, text[-4000:]
    assert "offsets 40 to 59 had been skipped" in text, text[-4000:]
    assert metric_sum(metrics, "segflow_process_skipped_fetches_total") == 1
    assert metric_sum(metrics, "segflow_process_commit_stalls_total") == 0
    assert_exactly_once(read_clean(env, len(first) + 1), {r["messageId"] for r in [*first, sixth]})


#: test-only start-up code of the worker (a sitecustomize module on its PYTHONPATH): once the
#: file SEGFLOW_TEST_STALL_FILE exists, the agent waits for good on its next batch: the worker
#: stays up and ready, and nothing more is processed or committed
STALL_HOOK = """
import asyncio
import os

from processors import batch_agent

_flag = os.environ["SEGFLOW_TEST_STALL_FILE"]
_process_batch = batch_agent.BatchAgent.process_batch


async def process_batch(self, messages):
    if os.path.exists(_flag):
        await asyncio.Event().wait()
    return await _process_batch(self, messages)


batch_agent.BatchAgent.process_batch = process_batch
"""


def test_a_worker_that_makes_no_progress_stops_and_its_successor_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A worker whose agent waits for good (no error, still ready) commits nothing more while
    records wait: after SEGFLOW_PROCESS_PROGRESS_STALL_S its watchdog logs the partitions and
    the worker exits non-zero; the worker started after it finishes the stream, each event once
    on the clean topics."""
    env = make_env(kafka_bootstrap, tmp_path, partitions=PARTITIONS)
    records = [
        raw_event("track", anonymous_id=f"anon-{i % 50}", event="Order Completed")
        for i in range(900)
    ]
    flag = tmp_path / "stall"
    log = tmp_path / "worker.log"
    raw_topics = env.topics.all_raw()
    produce(env.bootstrap, env.topics, records[:450])
    stalled = start_hooked_worker(
        env,
        tmp_path,
        STALL_HOOK,
        log,
        SEGFLOW_TEST_STALL_FILE=str(flag),
        SEGFLOW_PROCESS_COMMIT_STALL_S="2",
        **{**WORKER, "SEGFLOW_PROCESS_PROGRESS_STALL_S": "6"},
    )
    try:
        wait_all_committed(env, [stalled], timeout_s=90, log=log)
        flag.touch()
        produce(env.bootstrap, env.topics, records[450:])
        started = time.monotonic()
        code = stalled.wait(90)
        took = time.monotonic() - started
    finally:
        if stalled.poll() is None:
            stalled.kill()
            stalled.wait()
    text = log.read_text(errors="replace")
    assert code != 0, f"the stalled worker exited with {code}; the log's end:\n{text[-4000:]}"
    assert "no progress for" in text and "the worker stops, to be restarted" in text, text[-4000:]
    done = committed_total(env.bootstrap, env.app_id, raw_topics)
    assert done == 450, f"{done} committed, 450 before the stall"

    successor = start_worker(env, log, **WORKER)
    try:
        wait_all_committed(env, [successor], timeout_s=90, log=log)
    finally:
        stop_worker(successor)
    assert_exactly_once(read_clean(env, len(records)), {r["messageId"] for r in records})
    print(f"the stalled worker exited {took:.1f} s after the records it did not process came")
