"""Background processes of the local services: spawn, pid files, readiness, termination."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.services.layout import ServicePaths

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.2

PidAction = Callable[[int], None]
"""Something done to a running service's pid: terminate or kill."""


class ServiceError(RuntimeError):
    """A local service could not be fetched, started or stopped; the message says where to look."""


@dataclass(frozen=True)
class ServiceStatus:
    """What `status()` reports about one local service."""

    name: str
    running: bool
    pid: int | None
    address: str
    ready: bool
    managed: bool
    """True when the process was started by these scripts (we hold its pid file)."""


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The live pid in `pid_file` whose command line contains `marker`, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not is_alive(pid):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            if marker not in cmdline.read_bytes().decode(errors="replace"):
                return None  # the pid was reused by some other program
        except OSError:
            return None
    return pid


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is dead for our purposes
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(args: Sequence[str], *, log_file: Path, pid_file: Path, cwd: Path) -> int:
    """Start `args` detached from our session, output appended to `log_file`; write its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(args),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    logger.info("started %s (pid %s), log %s", args[0], proc.pid, log_file)
    return proc.pid


def wait_ready(
    name: str,
    pid: int,
    ready: Callable[[], bool],
    *,
    timeout: float,
    log_file: Path,
) -> None:
    """Poll `ready()` until it is true; raise ServiceError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if not is_alive(pid):
            raise ServiceError(f"{name} (pid {pid}) exited while starting; see {log_file}")
        if time.monotonic() >= deadline:
            raise ServiceError(
                f"{name} (pid {pid}) not ready after {timeout:.0f} s; see {log_file}"
            )
        time.sleep(_POLL_SECONDS)


def terminate(pid: int, *, timeout: float) -> None:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            logger.warning("pid %s did not stop within %.0f s; killing it", pid, timeout)
            kill(pid)
            return
        time.sleep(_POLL_SECONDS)


def kill(pid: int, *, timeout: float = 10.0) -> None:
    """SIGKILL and wait until the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def lock(lock_file: Path) -> Iterator[None]:
    """Serialise start/stop of one service across processes (CLI, make, pytest)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def end(paths: ServicePaths, name: str, marker: str, how: PidAction) -> bool:
    """Apply `how` (terminate or kill) to service `name` if we run it; False if it did not run."""
    with lock(paths.lock_file(name)):
        pid = read_pid(paths.pid_file(name), marker)
        if pid is None:
            return False
        how(pid)
        paths.pid_file(name).unlink(missing_ok=True)
        return True
