"""The whole pipeline under faults: every event the edge answered 200 for lands exactly once.

During a steady stream of Segment batches the test's own broker (a private instance: the shared
one is never touched) is killed with SIGKILL and started again, then each component (the edge,
the processor worker, the sink) is killed with SIGKILL and restarted. A component that dies by
itself meanwhile (a lost broker can end a worker) is restarted too, as Kubernetes would. At the
end the warehouse holds every messageId of every 200 answer, each exactly once.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from runtime.services import emulator
from runtime.services import kafka as kafka_service
from tests.integration.conftest import free_port, private_emulator
from tests.integration.pipeline import WRITE_KEY, Pipeline, running_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
BATCH = 10


@dataclass
class Stream:
    """Batches of tracks sent back to back to whatever edge answers; remembers the 200s."""

    pipe: Pipeline
    accepted: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.is_set():
            n += 1
            ids = [str(uuid.uuid4()) for _ in range(BATCH)]
            batch = [
                {
                    "type": "track",
                    "event": "Steady Event",
                    "anonymousId": f"anon-{n % 7}",
                    "messageId": i,
                    "properties": {"n": n},
                }
                for i in ids
            ]
            try:
                resp = session.post(
                    self.pipe.edge + "/v1/batch",
                    data=orjson.dumps({"batch": batch}),
                    headers=AUTH,
                    timeout=15,
                )
            except requests.RequestException:
                self.statuses[0] = self.statuses.get(0, 0) + 1
                time.sleep(0.05)
                continue
            self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
            if resp.status_code == 200:
                self.accepted.update(ids)
            else:
                time.sleep(0.05)
            time.sleep(0.02)


@dataclass(frozen=True)
class PrivateBroker:
    port: int
    controller_port: int
    var_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        kafka_service.start(
            port=self.port, controller_port=self.controller_port, var_dir=self.var_dir
        )

    def kill(self) -> None:
        kafka_service.kill(var_dir=self.var_dir)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(free_port(), free_port(), tmp_path / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        kafka_service.stop(var_dir=broker.var_dir)


@pytest.fixture
def private_warehouse(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The sink is SIGKILLed, possibly inside its flush transaction: its session is closed once
    idle, as Snowflake aborts a detached session's transaction. On the shared emulator that
    transaction stayed open and every restarted sink's offsets update conflicted with it."""
    with private_emulator(tmp_path / "warehouse") as port:
        yield emulator.conn_params(emulator.DEFAULT_HOST, port)


# A SIGKILLed worker or sink leaves its group only when its session times out; until then its
# partitions wait (30 s and 45 s by default). The guarantees do not depend on how long that is.
QUICK_TO_NOTICE_A_DEATH = {
    "SEGFLOW_PROCESS_SESSION_TIMEOUT_S": "6",
    "SEGFLOW_SINK_SESSION_TIMEOUT_MS": "6000",
}


def _keep_alive(pipe: Pipeline, restarted: dict[str, int]) -> None:
    """Restart any component that exited by itself."""
    for name, comp in list(pipe.components.items()):
        if comp.proc.poll() is not None:
            restarted[name] = restarted.get(name, 0) + 1
            pipe.start(name)


def _wait(pipe: Pipeline, restarted: dict[str, int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _keep_alive(pipe, restarted)
        time.sleep(0.2)


def test_broker_and_component_kills_lose_nothing_and_duplicate_nothing(
    private_broker: PrivateBroker, private_warehouse: dict[str, Any], tmp_path: Path
) -> None:
    bootstrap = private_broker.bootstrap
    restarted: dict[str, int] = {}
    with running_pipeline(
        bootstrap, private_warehouse, tmp_path, partitions=2, env_extra=QUICK_TO_NOTICE_A_DEATH
    ) as pipe:
        stream = Stream(pipe)
        sender = threading.Thread(target=stream.run, daemon=True)
        sender.start()
        try:
            _wait(pipe, restarted, 3)
            assert stream.accepted, f"nothing accepted before the faults: {stream.statuses}"

            # the broker dies hard and comes back
            private_broker.kill()
            _wait(pipe, restarted, 2)
            private_broker.start()
            _wait(pipe, restarted, 4)

            # each component dies hard and is restarted
            for name in ("ingest", "process", "sink"):
                pipe.components[name].proc.kill()
                pipe.components[name].proc.wait(10)
                pipe.start(name)
                _wait(pipe, restarted, 3)
        finally:
            stream.stop.set()
            sender.join(30)

        accepted = stream.accepted
        assert len(accepted) >= 20 * BATCH, stream.statuses

        def loaded() -> list[str]:
            _keep_alive(pipe, restarted)
            return [r[0] for r in pipe.query("SELECT id FROM web.steady_event")]

        deadline = time.monotonic() + 180
        ids = loaded()
        while not accepted <= set(ids) and time.monotonic() < deadline:
            time.sleep(1)
            ids = loaded()
        missing = accepted - set(ids)
        assert not missing, f"{len(missing)} of {len(accepted)} accepted events never landed"
        assert len(ids) == len(set(ids)), "an event landed twice"
        tracks = pipe.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM web.tracks")[0]
        assert tracks[0] == tracks[1], "a duplicate row in tracks"
        # ids beyond `accepted` are events whose answer was lost with a killed edge: allowed,
        # (the client would retry them with the same messageId), but each once
        print(f"statuses {stream.statuses}, restarted by themselves {restarted}")
