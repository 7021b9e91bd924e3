"""`segflow up` as a person runs it: short output (one line per component when it is ready, then
the closing block), events land, a dead component is restarted, Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.demo import journeys, send
from tests.integration.components import REPO, warehouse
from tests.integration.conftest import free_port, unique_name
from tests.integration.pipeline import WRITE_KEY, poll

pytestmark = pytest.mark.integration


def test_up_runs_restarts_and_stops(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], tmp_path: Path
) -> None:
    port = free_port()
    database = unique_name("UP").upper()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SEGFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SEGFLOW_KAFKA_TOPIC_PREFIX": unique_name("up") + ".",
        "SEGFLOW_SNOWFLAKE_DATABASE": database,
        "SEGFLOW_SNOWFLAKE_PORT": str(warehouse_conn_params["port"]),
        "SEGFLOW_PROCESS_APP_ID": unique_name("up-app"),
        "SEGFLOW_PROCESS_STATE_DIR": str(tmp_path / "faust"),
        "SEGFLOW_PROCESS_METRICS_PORT": str(free_port()),
        "SEGFLOW_SINK_METRICS_PORT": str(free_port()),
        "SEGFLOW_SINK_GROUP_ID": unique_name("up-sink"),
        "SEGFLOW_SINK_FLUSH_AGE_S": "0.5",
        "SEGFLOW_CONSOLE_PORT": str(free_port()),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--ingest-port", str(port), "--partitions", "2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    out = lambda: "".join(lines)  # noqa: E731
    try:
        poll(lambda: "stop:       Ctrl-C" in out(), 90, "the closing block")
        before, _, block = out().partition("segflow is running.")
        # a person reads it: no partition lists or library chatter before the block
        assert len(before.splitlines()) < 40 and len(before.encode()) < 4096, before
        for line in ("kafka ready", "warehouse ready", "topics ready"):
            assert line in before, before
        for name, metrics_port in (
            ("ingest", port),
            ("process", int(env["SEGFLOW_PROCESS_METRICS_PORT"])),
            ("sink", int(env["SEGFLOW_SINK_METRICS_PORT"])),
        ):
            assert re.search(rf"segflow \| {name} ready \([\d.]+s\)", before), before
            assert f"http://127.0.0.1:{metrics_port}/metrics" in block
        console = f"http://127.0.0.1:{env['SEGFLOW_CONSOLE_PORT']}"
        assert re.search(rf"segflow \| console ready \([\d.]+s\)  {console}/healthz", before)
        assert "Highwater" not in out() and "TopicPartition(" not in out()
        assert f"http://127.0.0.1:{port}/v1/track" in block and f"console:    {console}" in block
        calls = list(journeys(3, seed=5, duplicate_fraction=0, late_fraction=0))
        report = poll(lambda: _send_ok(calls, port), 60, "the edge to accept events")
        tracks = len(report.message_ids["track"])

        conn = warehouse(warehouse_conn_params, database)

        def loaded() -> bool:
            try:
                rows = conn.cursor().execute("SELECT COUNT(*) FROM web.tracks").fetchall()
            except Exception:
                return False
            return bool(rows[0][0] >= tracks)

        poll(loaded, 90, "tracks in the warehouse")
        conn.close()

        # a component that dies is restarted and reported
        pid = int(re.findall(r"started ingest \(pid (\d+)\)", out())[-1])
        os.kill(pid, signal.SIGKILL)
        poll(lambda: "ingest exited with code -9" in out(), 30, "the death report")
        poll(lambda: len(re.findall(r"started ingest \(pid", out())) == 2, 30, "a restart")
        poll(lambda: _send_ok(calls[:1], port), 60, "the restarted edge")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            reader.join(10)
            raise AssertionError(
                f"up did not stop within 60 s of SIGINT:\n{out()[-4000:]}"
            ) from None
        reader.join(10)
    assert code == 0, out()[-3000:]
    assert "all components stopped" in out()
    pids = [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", out())]
    time.sleep(0.5)
    for child in pids:
        assert not Path(f"/proc/{child}").exists() or _zombie(child), f"pid {child} still runs"


def _send_ok(calls: list[Any], port: int) -> Any:
    report = send(calls, f"http://127.0.0.1:{port}", WRITE_KEY)
    return report if not report.errors else None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
