"""Benchmarks: run by hand, print their figures (see each module's docstring)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka.admin import AdminClient


def drop_topics(bootstrap: str, prefixes: Iterable[str]) -> int:
    """Delete the topics a benchmark made (names starting with one of `prefixes`), so runs do
    not pile partitions up on the local broker. Best effort; returns how many were deleted."""
    starts = tuple(prefixes)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    doomed = [t for t in admin.list_topics(timeout=10).topics if t.startswith(starts)]
    deleted = 0
    for name, fut in admin.delete_topics(doomed).items() if doomed else ():
        try:
            fut.result(timeout=30)
            deleted += 1
        except Exception as exc:  # deleting is best effort
            print(f"could not delete bench topic {name}: {exc}")
    return deleted


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a running process, in MB (NaN if it reports none)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds so far of each thread of a process, by thread id (the main
    thread's id is the pid); threads that ended meanwhile are missing."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def service_pids() -> dict[str, int]:
    """The local broker's and emulator's pids, when segflow started them (for CPU accounting)."""
    from runtime.services import emulator, kafka

    pids = {}
    for name, status in (("broker", kafka.status()), ("emulator", emulator.status())):
        if status.pid is not None:
            pids[name] = status.pid
    return pids
