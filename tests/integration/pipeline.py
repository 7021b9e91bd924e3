"""The whole pipeline for end-to-end tests: edge, processor worker and sink as subprocesses.

Every test gets its own topic prefix, consumer group, Faust app id and warehouse database, so
pipelines of different tests never see each other's data.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from runtime.settings import KafkaSettings
from runtime.topic_admin import create_topics, expected_topics
from schemas.topics import Topics
from tests.integration.components import Component, env_for, warehouse
from tests.integration.conftest import free_port, unique_name

T = TypeVar("T")
WRITE_KEY = "dev-write-key"  # the embedded default rules: source "web"
SOURCE = "web"


@dataclass
class Pipeline:
    bootstrap: str
    conn_params: dict[str, Any]
    prefix: str
    database: str
    tmp: Path
    env: dict[str, str]
    ingest_port: int = 0
    components: dict[str, Component] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    @property
    def edge(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    def start(self, name: str) -> Component:
        """Start (or restart) one component and wait until it says it is ready."""
        n = self.starts.get(name, 0) + 1
        self.starts[name] = n
        env = dict(self.env)
        port = free_port()
        if name == "ingest":
            self.ingest_port = self.ingest_port or port
            env["SEGFLOW_INGEST_PORT"] = str(self.ingest_port)
            port = self.ingest_port
        elif name == "process":
            env["SEGFLOW_PROCESS_METRICS_PORT"] = str(port)
        else:
            env["SEGFLOW_SINK_METRICS_PORT"] = str(port)
        comp = Component(name, [name], env, self.tmp / f"{name}.{n}.log")
        self.components[name] = comp
        comp.wait_ready_http(port, timeout_s=90)
        return comp

    def stop(self) -> None:
        for comp in self.components.values():
            comp.stop()

    def strict_refusals(self) -> list[str]:
        """Log lines where a component's statement was refused by the strict check (what
        Snowflake would refuse; sinks/snowflake/strict.py): every one is a bug to fail on."""
        return [
            line
            for log in sorted(self.tmp.glob("*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if "strict check:" in line
        ]

    def connect(self) -> Any:
        return warehouse(self.conn_params, self.database)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            return list(conn.cursor().execute(sql).fetchall())
        finally:
            conn.close()

    def count(self, table: str, where: str = "") -> int:
        """Rows of SOURCE.table (0 while the table does not exist yet)."""
        try:
            rows = self.query(f"SELECT COUNT(*) FROM {SOURCE}.{table} {where}")
        except Exception as exc:  # the sink creates tables on first use
            if "does not exist" in str(exc) or "not found" in str(exc).lower():
                return 0
            raise
        return int(rows[0][0])

    def metrics(self, name: str, port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())


@contextmanager
def running_pipeline(
    bootstrap: str,
    conn_params: dict[str, Any],
    tmp: Path,
    partitions: int = 3,
    env_extra: dict[str, str] | None = None,
) -> Iterator[Pipeline]:
    """The edge, a processor worker and a sink as subprocesses on fresh topics and database;
    `env_extra` adds to (or overrides) their environment."""
    prefix = unique_name("e2e") + "."
    database = unique_name("E2E").upper()
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix)
    create_topics(kafka, expected_topics(kafka.topics, partitions=partitions))
    env = env_for(bootstrap, conn_params, prefix, database)
    env.update(
        {
            "SEGFLOW_PROCESS_APP_ID": unique_name("e2e-app"),
            "SEGFLOW_PROCESS_STATE_DIR": str(tmp / "faust"),
            "SEGFLOW_PROCESS_PII_HMAC_KEY": "e2e-test-key-0123456789abcdef0123456789",
            "SEGFLOW_SINK_GROUP_ID": unique_name("e2e-sink"),
            "SEGFLOW_SINK_FLUSH_AGE_S": "0.5",
            "SEGFLOW_SNOWFLAKE_NETWORK_TIMEOUT_S": "20",
            "SEGFLOW_SNOWFLAKE_LOGIN_TIMEOUT_S": "10",
            **(env_extra or {}),
        }
    )
    pipe = Pipeline(bootstrap, conn_params, prefix, database, tmp, env)
    try:
        for name in ("sink", "process", "ingest"):
            pipe.start(name)
        yield pipe
    finally:
        pipe.stop()
    refused = pipe.strict_refusals()
    assert not refused, "statements Snowflake would refuse:\n" + "\n".join(refused[:20])


def poll(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    """Call `check` until it returns a truthy value; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {last!r}")
        time.sleep(interval_s)
        last = check()
    return last


def post(url: str, body: bytes, write_key: str = WRITE_KEY) -> tuple[int, dict[str, Any]]:
    """POST a raw body with Basic auth; (status, parsed JSON answer)."""
    import base64

    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{write_key}:".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
