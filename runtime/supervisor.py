"""Runs the pipeline's components as child processes for `segflow up`.

Each child's output is prefixed with its name (terminal control sequences removed); a child with
a readiness URL is polled until it answers 200, and reported ready once per start; a child that
dies is restarted with a growing delay (reset after it ran a while) and the restart is reported;
stop() ends every child with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

logger = logging.getLogger(__name__)


# CSI and OSC sequences (cursor show/hide, colours, titles) and the other C0 controls (a
# spinner's backspaces, carriage returns) that libraries write even to a pipe
_CONTROL = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])|[\x00-\x08\x0b-\x1f\x7f]"
)


def strip_control(line: str) -> str:
    """`line` without terminal control sequences."""
    return _CONTROL.sub("", line)


def http_ready(url: str, timeout_s: float = 1.0) -> bool:
    """True when `url` answers 200 (a component's /readyz)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    """Polled after each start until it answers 200; None: ready once started."""


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    ready: bool = False
    starts: int = 0


class Supervisor:
    """Starts children, keeps them running, stops them all."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        out: IO[str] | None = None,
        grace_s: float = 20.0,
        max_backoff_s: float = 30.0,
        probe: Callable[[str], bool] = http_ready,
    ) -> None:
        self._children = [_Child(s) for s in specs]
        self._probe = probe
        self._out = out or sys.stdout
        self._out_lock = threading.Lock()
        self._grace_s = grace_s
        self._max_backoff_s = max_backoff_s
        self._stopping = threading.Event()
        width = max((len(s.name) for s in specs), default=0)
        self._width = width

    def _emit(self, name: str, line: str) -> None:
        with self._out_lock:
            self._out.write(f"{name:<{self._width}} | {line}")
            if not line.endswith("\n"):
                self._out.write("\n")
            self._out.flush()

    def write(self, text: str) -> None:
        """Write `text` as it is (a block for a person), between children's lines."""
        with self._out_lock:
            self._out.write(text)
            self._out.flush()

    def _pump(self, child: _Child, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = strip_control(raw.decode("utf-8", "replace"))
            if line.strip():
                self._emit(child.spec.name, line)
        stream.close()

    def _start(self, child: _Child) -> None:
        env = {**os.environ, **child.spec.env, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            list(child.spec.argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        child.proc, child.started_at = proc, time.monotonic()
        child.ready, child.starts = False, child.starts + 1
        assert proc.stdout is not None
        threading.Thread(target=self._pump, args=(child, proc.stdout), daemon=True).start()
        self._emit("segflow", f"started {child.spec.name} (pid {proc.pid})")

    def start(self) -> None:
        for child in self._children:
            self._start(child)

    def pids(self) -> dict[str, int | None]:
        return {c.spec.name: (c.proc.pid if c.proc else None) for c in self._children}

    def restarts(self) -> dict[str, int]:
        return {c.spec.name: c.restarts for c in self._children}

    def not_ready(self) -> list[str]:
        """The children not ready since their last start, in start order."""
        return [c.spec.name for c in self._children if not c.ready]

    def check_ready(self) -> None:
        """Poll the readiness of running children not ready yet; report each that became so."""
        for child in self._children:
            proc = child.proc
            if child.ready or proc is None or proc.poll() is not None:
                continue
            url = child.spec.ready_url
            if url is None or self._probe(url):
                child.ready = True
                took = time.monotonic() - child.started_at
                again = " again" if child.starts > 1 else ""
                where = f"  {url}" if url else ""
                self._emit("segflow", f"{child.spec.name} ready{again} ({took:.1f}s){where}")

    def check(self) -> None:
        """Restart children that exited (after their backoff delay)."""
        now = time.monotonic()
        for child in self._children:
            proc = child.proc
            if proc is None or proc.poll() is None or self._stopping.is_set():
                continue
            if child.next_start == 0.0:
                ran = now - child.started_at
                if ran > 60:
                    child.restarts = 0  # it had been healthy: start over with a short delay
                delay = min(self._max_backoff_s, 0.5 * 2**child.restarts)
                child.next_start = now + delay
                self._emit(
                    "segflow",
                    f"{child.spec.name} exited with code {proc.returncode} after {ran:.1f}s; "
                    f"restarting in {delay:.1f}s",
                )
            if now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                self._start(child)

    def run_until_stopped(
        self,
        poll_s: float = 0.5,
        *,
        on_all_ready: Callable[[], None] | None = None,
        slow_after_s: float = 60.0,
    ) -> None:
        """Restart children as they die and report them ready, until `request_stop` (or
        `stop`) is called. `on_all_ready` runs once, the first time every child is ready; one
        line names those still not ready after `slow_after_s`."""
        began, announced, warned = time.monotonic(), False, False
        while not self._stopping.wait(poll_s):
            self.check()
            self.check_ready()
            waiting = self.not_ready()
            if not waiting and not announced:
                announced = True
                if on_all_ready is not None:
                    on_all_ready()
            elif not announced and not warned and time.monotonic() - began > slow_after_s:
                warned = True
                urls = [
                    f"{c.spec.name} ({c.spec.ready_url})" for c in self._children if not c.ready
                ]
                self._emit("segflow", "still waiting for " + ", ".join(urls))

    def request_stop(self) -> None:
        """Make `run_until_stopped` return; safe in a signal handler (it only sets an event, so
        no exception lands in the middle of a restart or of a line being written); no child is
        restarted after it."""
        self._stopping.set()

    def stop(self) -> None:
        """SIGTERM every child, SIGKILL those still alive after the grace period."""
        self._stopping.set()
        live = [c.proc for c in self._children if c.proc is not None and c.proc.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._emit("segflow", "all components stopped")
