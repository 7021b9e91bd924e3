"""Runs the pipeline's components as child processes for `segflow up`.

Each child's output is prefixed with its name; a child that dies is restarted with a growing
delay (reset after it ran a while) and the restart is reported; stop() ends every child with
SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

logger = logging.getLogger(__name__)


@dataclass
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0


class Supervisor:
    """Starts children, keeps them running, stops them all."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        out: IO[str] | None = None,
        grace_s: float = 20.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._children = [_Child(s) for s in specs]
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

    def _pump(self, child: _Child, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self._emit(child.spec.name, raw.decode("utf-8", "replace"))
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

    def run_until_stopped(self, poll_s: float = 0.5) -> None:
        """Restart children as they die until `request_stop` (or `stop`) is called."""
        while not self._stopping.wait(poll_s):
            self.check()

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
