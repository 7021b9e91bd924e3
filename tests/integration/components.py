"""segflow components run as subprocesses (`python -m cli.main ...`) for end-to-end tests.

Each test gives them a unique topic prefix, consumer groups and warehouse database; their
output goes to a log file that is printed when a component fails to become ready.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import snowflake.connector
from confluent_kafka import Consumer, TopicPartition

from schemas.codec import AvroCodec

REPO = Path(__file__).resolve().parents[2]


class Component:
    """One running `segflow <command>`; stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *argv],
            cwd=REPO,
            env=full_env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def wait_until(self, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.output()}")
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout_s}s:\n{self.output()}")

    def wait_ready_http(self, port: int, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    return bool(r.status == 200)
            except urllib.error.HTTPError:
                return False

        self.wait_until(ready, timeout_s)

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()
        return int(self.proc.returncode)


def read_topic(
    bootstrap: str, topic: str, *, expected: int, timeout_s: float = 30.0, settle_s: float = 1.0
) -> list[Any]:
    """Every record of `topic` once `expected` arrived (and nothing more came for settle_s)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    quiet_until: float | None = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
                quiet_until = None
                continue
            if len(out) >= expected:
                quiet_until = quiet_until or time.monotonic() + settle_s
                if time.monotonic() >= quiet_until:
                    break
    finally:
        consumer.close()
    return out


def decode_all(kind: str, messages: list[Any]) -> list[dict[str, Any]]:
    codec = AvroCodec()
    return [codec.decode(kind, m.value()) for m in messages]


def warehouse(params: dict[str, Any], database: str) -> Any:
    """A connector connection to `database` on the emulator (created when missing)."""
    conn = snowflake.connector.connect(**params, paramstyle="qmark")
    conn.cursor().execute(f'CREATE DATABASE IF NOT EXISTS "{database.upper()}"')
    conn.cursor().execute(f'USE DATABASE "{database.upper()}"')
    return conn


def env_for(bootstrap: str, params: dict[str, Any], prefix: str, database: str) -> dict[str, str]:
    """Environment pointing a component at the test's broker, topics and warehouse database."""
    return {
        "SEGFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "SEGFLOW_KAFKA_TOPIC_PREFIX": prefix,
        "SEGFLOW_SNOWFLAKE_HOST": str(params["host"]),
        "SEGFLOW_SNOWFLAKE_PORT": str(params["port"]),
        "SEGFLOW_SNOWFLAKE_DATABASE": database.upper(),
        "SEGFLOW_LOG_FORMAT": "text",
        # the tests' pipelines are local development: the embedded rules' public keys may serve
        "SEGFLOW_ALLOW_DEV_DEFAULTS": "true",
    }
