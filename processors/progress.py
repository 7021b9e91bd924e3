"""The progress watchdog: a worker that holds raw partitions with records waiting and commits
none of them for a while is stopped, so that it is restarted and its partitions move on.

A worker can stop making progress without failing: ready, its partitions assigned, records
waiting on them, and nothing processed or committed, with no error logged (an agent task waiting
on something that never comes, a consumer whose fetcher was never restarted after a rebalance).
Its /readyz still answers 200 and the process is alive, so neither Kubernetes nor ``segflow up``
would restart it; its partitions, held by a live member of the group, are read by no one.
The stuck-commit guard (:class:`processors.faust_seam.CommitWatch`) heals one known cause; this
watchdog is the backstop for every other.

The rule, judged from the broker's view (the group's committed offsets and the partitions' end
offsets, read from a thread of its own, so a blocked event loop does not hide the stall): a raw
partition assigned to this worker is *waiting* when its end offset is at least two above its
committed offset (one is what a transaction marker at the end of the log leaves behind, never
committed past). It is *stalled* when it has been waiting with the same committed offset for
``progress_stall_s``. The clocks start again at each rebalance and while the worker is
rebalancing or recovering its tables (a long recovery is not a stall; restarting would only
start it over). A partition with no committed offset yet is judged from its log start offset,
where the worker starts reading it (the consumer's ``auto.offset.reset`` is earliest).
segflow writes the raw topics without transactions (the edge, replay and backfill); a raw
topic that another writer filled transactionally and whose last transaction aborted would end
in records no consumer receives and no commit passes, which this rule takes for records
waiting: such a worker would be restarted each period.

On a stall the worker logs an ERROR naming the partitions and their offsets, answers 503 on
/healthz (Kubernetes' liveness probe restarts the pod), and crashes its app: it stops and exits
non-zero, and ``segflow up`` or Kubernetes starts it again. Should the event loop not get to the
crash (blocked), the process exits from the watchdog's thread after a grace period. Either way
exactly-once holds: the open transactions are aborted or committed whole, as for any stop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import FrameType

from schemas.topics import PartitionKey

logger = logging.getLogger(__name__)

#: the end offset at least this far above the committed offset: records are waiting (a single
#: offset may be a transaction marker that no commit goes past)
WAITING_LAG = 2


@dataclass(frozen=True)
class Stall:
    """A partition waiting with the same committed offset for `waited_s` seconds."""

    topic: str
    partition: int
    committed: int
    end: int
    waited_s: float

    def describe(self) -> str:
        return (
            f"{self.topic}[{self.partition}] at offset {self.committed} "
            f"(end {self.end}, {self.end - self.committed} waiting)"
        )


class ProgressWatch:
    """Which assigned partitions have had records waiting, with no commit, for `stall_s`.

    Thread-safe: the event loop tells it the assignment, the watchdog's thread the offsets.
    """

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self._clock = clock
        self._lock = threading.Lock()
        self._assigned: frozenset[PartitionKey] = frozenset()
        #: partition -> (committed offset, since when it has been waiting at it)
        self._since: dict[PartitionKey, tuple[int, float]] = {}

    @property
    def assigned(self) -> frozenset[PartitionKey]:
        with self._lock:
            return self._assigned

    def assign(self, partitions: Iterable[PartitionKey]) -> None:
        """The worker's partitions after a rebalance: every clock starts again."""
        with self._lock:
            self._assigned = frozenset(partitions)
            self._since.clear()

    def settling(self) -> None:
        """The worker is rebalancing or recovering its tables: nothing is judged, and the
        clocks start again once it is done."""
        with self._lock:
            self._since.clear()

    def observe(
        self, committed: Mapping[PartitionKey, int | None], ends: Mapping[PartitionKey, int]
    ) -> list[Stall]:
        """The stalled partitions, given the group's committed offsets and the end offsets of
        (at least) the assigned partitions."""
        now = self._clock()
        stalls: list[Stall] = []
        with self._lock:
            for key in sorted(self._assigned):
                offset, end = committed.get(key), ends.get(key)
                if offset is None or offset < 0 or end is None or end - offset < WAITING_LAG:
                    self._since.pop(key, None)
                    continue
                since = self._since.get(key)
                if since is None or since[0] != offset:
                    self._since[key] = (offset, now)
                elif now - since[1] >= self.stall_s:
                    stalls.append(Stall(key[0], key[1], offset, end, now - since[1]))
        return stalls


#: (committed offsets, end offsets) of the given partitions, read from the broker
OffsetReader = Callable[
    [frozenset[PartitionKey]], tuple[Mapping[PartitionKey, int | None], Mapping[PartitionKey, int]]
]


class ProgressWatchdog:
    """Checks a :class:`ProgressWatch` every `period_s` from a daemon thread; on the first
    stall calls `on_stall` once and stops watching."""

    def __init__(
        self,
        watch: ProgressWatch,
        read: OffsetReader,
        settling: Callable[[], bool],
        on_stall: Callable[[list[Stall]], None],
        period_s: float,
    ) -> None:
        self.watch = watch
        self._read = read
        self._settling = settling
        self._on_stall = on_stall
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read_failed = False

    def start(self) -> ProgressWatchdog:
        self._thread = threading.Thread(
            target=self._run, name="segflow-progress-watchdog", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            stalls = self.check()
            if stalls:
                self._on_stall(stalls)
                return

    def check(self) -> list[Stall]:
        """One look at the offsets (nothing while the worker settles, or when the broker does
        not answer: no verdict without the broker's view)."""
        if self._settling():
            self.watch.settling()
            return []
        keys = self.watch.assigned
        if not keys:
            return []
        try:
            committed, ends = self._read(keys)
        except Exception as exc:  # the broker unreachable: no verdict, try again next period
            if not self._read_failed:
                logger.warning("progress watchdog: the offsets could not be read: %s", exc)
            self._read_failed = True
            return []
        self._read_failed = False
        return self.watch.observe(committed, ends)


def period_for(stall_s: float) -> float:
    """How often the watchdog looks: four times per stall period, between 1 and 15 s."""
    return min(max(stall_s / 4, 1.0), 15.0)


def _frame(obj: object) -> FrameType | None:
    frame: FrameType | None = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
    return frame


def await_chain(task: asyncio.Task[object]) -> list[str]:
    """The frames `task` waits in, outermost first (file, line, function), followed down its
    chain of awaited coroutines (a suspended task's own stack shows the outermost only)."""
    out: list[str] = []
    coro: object = task.get_coro()
    for _ in range(64):
        frame = _frame(coro)
        if frame is None:  # a wrapper (``__await__`` of a coroutine): the coroutine it holds
            inner = [o for o in gc.get_referents(coro) if _frame(o) is not None]
            if not inner:
                break
            coro, frame = inner[0], _frame(inner[0])
            assert frame is not None
        code = frame.f_code
        out.append(f"{code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if coro is None:
            break
    return out


def describe_tasks(tasks: Iterable[asyncio.Task[object]], most: int = 80) -> str:
    """Where each of `tasks` waits: its name and the frames of its await chain (no local
    variables), at most `most` tasks, for the log of a stall."""
    lines: list[str] = []
    listed = sorted(tasks, key=lambda t: t.get_name())
    for task in listed[:most]:
        where = " > ".join(await_chain(task)) or "(done or not started)"
        lines.append(f"{task.get_name()[:60]}: {where}")
    if len(listed) > most:
        lines.append(f"... and {len(listed) - most} more tasks")
    return "\n".join(lines)
