"""Readiness under `segflow up`: one line per component when its /readyz answers, the closing
block once everything is ready, again after a restart; children's terminal controls removed."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time

from runtime.supervisor import ChildSpec, Supervisor, strip_control


def _until(check: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


SLEEPER = "import time; time.sleep(60)"


def test_ready_lines_once_per_start_and_the_block_once() -> None:
    out = io.StringIO()
    answering: set[str] = set()
    sup = Supervisor(
        [
            ChildSpec("edge", [sys.executable, "-c", SLEEPER], ready_url="http://e/readyz"),
            ChildSpec("sink", [sys.executable, "-c", SLEEPER], ready_url="http://s/readyz"),
        ],
        out=out,
        grace_s=5,
        probe=lambda url: url in answering,
    )
    blocks: list[str] = []
    sup.start()
    loop = threading.Thread(
        target=sup.run_until_stopped,
        kwargs={"poll_s": 0.02, "on_all_ready": lambda: blocks.append(out.getvalue())},
    )
    loop.start()
    try:
        time.sleep(0.2)
        assert "ready" not in out.getvalue() and sup.not_ready() == ["edge", "sink"]
        answering.add("http://e/readyz")
        assert _until(lambda: "edge ready" in out.getvalue())
        assert "http://e/readyz" in out.getvalue() and not blocks
        answering.add("http://s/readyz")
        assert _until(lambda: blocks)
        # the block comes after the last ready line, and only once
        assert "sink ready" in blocks[0] and sup.not_ready() == []
        time.sleep(0.1)
        assert out.getvalue().count("edge ready") == 1

        pid = sup.pids()["edge"]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert _until(lambda: "edge ready again" in out.getvalue())
        assert len(blocks) == 1
    finally:
        sup.stop()
        loop.join(10)


def test_a_child_without_a_url_is_ready_when_started_and_a_slow_one_is_named() -> None:
    out = io.StringIO()
    sup = Supervisor(
        [
            ChildSpec("plain", [sys.executable, "-c", SLEEPER]),
            ChildSpec("slow", [sys.executable, "-c", SLEEPER], ready_url="http://never/readyz"),
        ],
        out=out,
        grace_s=5,
        probe=lambda url: False,
    )
    sup.start()
    loop = threading.Thread(
        target=sup.run_until_stopped, kwargs={"poll_s": 0.02, "slow_after_s": 0.2}
    )
    loop.start()
    try:
        assert _until(lambda: "still waiting for slow (http://never/readyz)" in out.getvalue())
        assert "plain ready" in out.getvalue()
        assert out.getvalue().count("still waiting") == 1
    finally:
        sup.stop()
        loop.join(10)


def test_children_lines_lose_terminal_controls_and_blank_lines() -> None:
    out = io.StringIO()
    script = (
        "import sys; sys.stdout.write('\\x1b[?25l\\x08\\n\\x1b[31mred\\x1b[0m line\\r\\n'"
        "'\\x1b[?25h\\n'); sys.stdout.flush()"
    )
    sup = Supervisor([ChildSpec("faust", [sys.executable, "-c", script])], out=out, grace_s=5)
    sup.start()
    try:
        assert _until(lambda: "red line" in out.getvalue())
        time.sleep(0.2)
    finally:
        sup.stop()
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("faust")]
    assert lines == ["faust | red line"]
    assert "\x1b" not in out.getvalue() and "\x08" not in out.getvalue()
    assert strip_control("\x1b]0;title\x07ok\t1") == "ok\t1"
