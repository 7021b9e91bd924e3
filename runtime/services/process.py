"""Background processes of the local services: spawn, pid files, readiness, termination.

`Service` describes one local process (its name, the marker of its command line, its address
and its readiness probe); `status`, `start`, `launch`, `stop` and `end` are the one lifecycle
that the broker(s) and the emulator share.
"""

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


Launch = Callable[[], Sequence[str]]
"""Prepares a service (fetch, format, configure) and returns the command line that runs it."""


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


@dataclass(frozen=True)
class Service:
    """One local service process: where it listens and how to tell it is ready."""

    name: str
    """Names its pid, lock and log files (`var/run/<name>.pid`, `var/log/<name>.log`)."""
    marker: str
    """A string of its command line, so a reused pid is not taken for it."""
    host: str
    ports: tuple[int, ...]
    """Every port it listens on; the first is its address."""
    ready: Callable[[], bool]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.ports[0]}"


def status(paths: ServicePaths, service: Service) -> ServiceStatus:
    """Is our process (or anything that answers the probe on its address) running and ready?"""
    pid = read_pid(paths.pid_file(service.name), service.marker)
    ready = service.ready() if pid or port_open(service.host, service.ports[0]) else False
    return ServiceStatus(
        name=service.name,
        running=pid is not None or ready,
        pid=pid,
        address=service.address,
        ready=ready,
        managed=pid is not None,
    )


def launch(paths: ServicePaths, service: Service, prepare: Launch) -> tuple[int | None, bool]:
    """Spawn the service unless it is ready already; do not wait for it.

    Returns (pid to wait for or None when it is ready, True when this call spawned it).
    Raises ServiceError when one of its ports is taken by another program.
    """
    with lock(paths.lock_file(service.name)):
        current = status(paths, service)
        if current.ready:
            if not current.managed:
                logger.info(
                    "%s: something not started by segflow answers on %s; using it",
                    service.name,
                    service.address,
                )
            return None, False
        if current.pid is not None:  # ours, still starting (or hung)
            return current.pid, False
        for port in service.ports:
            if port_open(service.host, port):
                raise ServiceError(
                    f"{service.host}:{port} is taken by another program; cannot start "
                    f"{service.name}"
                )
        args = prepare()
        pid = spawn(
            args,
            log_file=paths.log_file(service.name),
            pid_file=paths.pid_file(service.name),
            cwd=paths.root,
        )
        return pid, True


def await_ready(paths: ServicePaths, service: Service, pid: int, *, timeout: float) -> None:
    """Wait until `service` (pid) is ready; on failure kill it and raise ServiceError."""
    try:
        wait_ready(
            service.name,
            pid,
            service.ready,
            timeout=timeout,
            log_file=paths.log_file(service.name),
        )
    except ServiceError:
        kill(pid)
        raise


def start(paths: ServicePaths, service: Service, prepare: Launch, *, timeout: float) -> bool:
    """Start `service` unless it is ready; wait until it is. True when this call started it.

    Raises ServiceError (naming the log file) when it does not come up in `timeout` seconds.
    """
    pid, started = launch(paths, service, prepare)
    if pid is None:
        return False
    if started:
        await_ready(paths, service, pid, timeout=timeout)
        logger.info("%s ready on %s (pid %s)", service.name, service.address, pid)
    else:
        wait_ready(
            service.name,
            pid,
            service.ready,
            timeout=timeout,
            log_file=paths.log_file(service.name),
        )
    return started


def stop(paths: ServicePaths, service: Service, *, timeout: float) -> bool:
    """SIGTERM our process, SIGKILL after `timeout`; False if it was not running."""
    return end(paths, service.name, service.marker, lambda pid: terminate(pid, timeout=timeout))


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
