from __future__ import annotations

import io
import os
import signal
import sys
import time

from runtime.supervisor import ChildSpec, Supervisor


def _until(check: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_prefixes_output_restarts_a_dead_child_and_stops_all() -> None:
    out = io.StringIO()
    script = "import time,sys; print('hello', flush=True); time.sleep(60)"
    sup = Supervisor(
        [
            ChildSpec("alpha", [sys.executable, "-c", script]),
            ChildSpec("b", [sys.executable, "-c", script]),
        ],
        out=out,
        grace_s=5,
    )
    sup.start()
    try:
        assert _until(lambda: out.getvalue().count("| hello") == 2)
        assert "alpha | hello" in out.getvalue()
        first_pid = sup.pids()["alpha"]
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)

        def restarted() -> bool:
            sup.check()
            return sup.pids()["alpha"] != first_pid

        assert _until(restarted)
        assert "alpha exited with code -9" in out.getvalue()
        assert sup.restarts()["alpha"] == 1
        assert _until(lambda: out.getvalue().count("| hello") == 3)
    finally:
        sup.stop()
    for pid in sup.pids().values():
        assert pid is not None
        assert _until(lambda p=pid: not _alive(p))
    assert "all components stopped" in out.getvalue()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"
