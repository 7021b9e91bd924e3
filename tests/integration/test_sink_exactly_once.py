"""Exactly once under faults: the sink SIGKILLed at random points, two instances with forced
rebalances, the warehouse stopped and restarted, a backlog loaded in flushes prepared ahead
through a rebalance and a kill. In each, every messageId sent is in the
warehouse exactly once at the end. Real broker, real connector; the sink runs as a subprocess."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.services import emulator
from tests.integration.conftest import (
    IDLE_SESSION_TIMEOUT_S,
    free_port,
    private_emulator,
    unique_name,
)
from tests.integration.sink_support import (
    SinkProcess,
    Warehouse,
    clean_event,
    encode_event,
    make_topics,
    poll_until,
    produce,
    scrape_samples,
    sink_env,
)

pytestmark = pytest.mark.integration

FAST = {
    "SEGFLOW_SINK_FLUSH_AGE_S": "0.3",
    "SEGFLOW_SINK_FLUSH_ROWS": "150",
    "SEGFLOW_SINK_SESSION_TIMEOUT_MS": "6000",
    "SEGFLOW_SINK_HONOUR_SUPPRESSIONS": "false",
    "SEGFLOW_SINK_RETRY_INITIAL_S": "0.2",
    "SEGFLOW_SINK_RETRY_MAX_S": "1",
    "SEGFLOW_SNOWFLAKE_NETWORK_TIMEOUT_S": "8",
    "SEGFLOW_SNOWFLAKE_LOGIN_TIMEOUT_S": "5",
}


class Stream:
    """Produces `total` track events with unique messageIds at a steady rate, in a thread."""

    def __init__(self, bootstrap: str, topic: str, total: int, seconds: float) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.total, self.seconds = total, seconds
        self.ids: list[str] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            chunk = 50
            pause = self.seconds / (self.total / chunk)
            for start in range(0, self.total, chunk):
                records = [
                    clean_event("track", i, anonymous_id=f"anon-{i % 40}")
                    for i in range(start, min(start + chunk, self.total))
                ]
                produce(self.bootstrap, self.topic, [encode_event(r) for r in records])
                self.ids += [r["messageId"] for r in records]
                time.sleep(pause)
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def join(self) -> list[str]:
        self._thread.join(self.seconds + 60)
        if self.error is not None:
            raise self.error
        return self.ids


@pytest.fixture(scope="module")
def private_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A private emulator: these tests kill warehouse clients mid-transaction (the emulator
    closes their idle sessions, as Snowflake aborts detached transactions) and stop it."""
    var_dir = tmp_path_factory.mktemp("private-warehouse")
    with private_emulator(var_dir) as port:
        yield {"port": port, "var_dir": var_dir}


@pytest.fixture
def ctx(
    kafka_bootstrap: str, private_warehouse: dict[str, Any], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    run_id = unique_name("sinkeo")  # the session deletes its topics at its end
    prefix = f"{run_id}."
    c: dict[str, Any] = {
        "bootstrap": kafka_bootstrap,
        "prefix": prefix,
        "database": f"SINK_EO_{run_id.upper()}",
        "group": f"eo-{run_id}",
        "topics": make_topics(kafka_bootstrap, prefix, partitions=3),
        "tmp": tmp_path,
        "sinks": [],
        "port": private_warehouse["port"],
        "var_dir": private_warehouse["var_dir"],
        "wh": Warehouse(f"SINK_EO_{run_id.upper()}", port=private_warehouse["port"]),
    }
    yield c
    for sink in c["sinks"]:
        sink.kill()


def start(c: dict[str, Any], **env: str) -> SinkProcess:
    sink = SinkProcess(
        sink_env(
            c["bootstrap"],
            c["prefix"],
            c["database"],
            c["group"],
            **{**FAST, "SEGFLOW_SNOWFLAKE_PORT": str(c["port"]), **env},
        ),
        c["tmp"] / f"sink-{len(c['sinks'])}.log",
    ).start()
    c["sinks"].append(sink)
    return sink


def assert_exactly_once(wh: Warehouse, ids: list[str], timeout: float = 90) -> None:
    def loaded() -> bool:
        rows = wh.try_query('SELECT COUNT(DISTINCT "ID") FROM "WEB"."TRACKS"')
        return bool(rows) and rows[0][0] == len(ids)

    poll_until(loaded, timeout, f"{len(ids)} distinct ids in tracks")
    for table in ("TRACKS", "ORDER_COMPLETED", "AUDIT_LOG"):
        total, distinct = wh.query(f'SELECT COUNT(*), COUNT(DISTINCT "ID") FROM "WEB"."{table}"')[0]
        assert (total, distinct) == (len(ids), len(ids)), table
    loaded_ids = {r[0] for r in wh.query('SELECT "ID" FROM "WEB"."AUDIT_LOG"')}
    assert loaded_ids == set(ids)


def wh_count(wh: Warehouse) -> int:
    rows = wh.try_query('SELECT COUNT(*) FROM "WEB"."AUDIT_LOG"')
    return int(rows[0][0]) if rows else 0


def test_sigkill_at_random_points(ctx: dict[str, Any]) -> None:
    rnd = random.Random()
    stream = Stream(ctx["bootstrap"], ctx["topics"].clean("track"), 3000, 14).start()
    kills = 0
    instance = f"eo-static-{uuid.uuid4().hex[:6]}"
    while kills < 5:
        sink = start(ctx, SEGFLOW_SINK_INSTANCE_ID=instance).wait_assigned()
        time.sleep(rnd.uniform(0.5, 2.5))  # the point of the kill is what is random here
        assert sink.alive(), sink.log()[-2000:]
        sink.kill()
        kills += 1
    ids = stream.join()
    final = start(ctx, SEGFLOW_SINK_INSTANCE_ID=instance)
    assert_exactly_once(ctx["wh"], ids)
    assert final.stop() == 0, final.log()[-3000:]


@pytest.mark.parametrize("strategy", ["roundrobin", "cooperative-sticky"])
def test_two_instances_with_forced_rebalances(ctx: dict[str, Any], strategy: str) -> None:
    """Under either rebalance protocol: the default eager one, and the cooperative one."""
    stream = Stream(ctx["bootstrap"], ctx["topics"].clean("track"), 3000, 14).start()
    protocol = {"SEGFLOW_SINK_ASSIGNMENT_STRATEGY": strategy}
    first = start(ctx, **protocol).wait_assigned()
    second = start(ctx, **protocol)
    for _ in range(2):  # a third member joins and leaves: both rebalance each time
        time.sleep(1.5)
        third = start(ctx, **protocol).wait_assigned()
        time.sleep(1.5)
        assert third.stop() == 0, third.log()[-2000:]
    time.sleep(1.0)
    first.kill()  # its partitions move to the survivor after the session timeout
    ids = stream.join()
    assert_exactly_once(ctx["wh"], ids)
    assert second.alive(), second.log()[-2000:]
    assert "revoked" in second.log() or "assigned" in second.log()
    assert second.stop() == 0, second.log()[-3000:]


def test_warehouse_stopped_and_restarted(ctx: dict[str, Any]) -> None:
    port, var_dir, wh = ctx["port"], ctx["var_dir"], ctx["wh"]
    stream = Stream(ctx["bootstrap"], ctx["topics"].clean("track"), 2000, 10).start()
    sink = start(ctx)
    poll_until(
        lambda: (wh.try_query('SELECT COUNT(*) FROM "WEB"."TRACKS"') or [(0,)])[0][0] > 0,
        30,
        "rows",
    )
    emulator.stop(var_dir=var_dir)
    down_at = time.monotonic()
    # records that arrive while the warehouse is down (the stream may be over on a slow machine)
    extra = [clean_event("track", 100_000 + i) for i in range(50)]
    produce(ctx["bootstrap"], ctx["topics"].clean("track"), [encode_event(r) for r in extra])
    # the sink's own retry, or the connector's retries of a PUT the outage cut off (those back
    # off 1, 2, 4, 8, 16 s before the flush fails and the sink retries it)
    poll_until(
        lambda: any(sign in sink.log() for sign in ("retry", "PUT with url")),
        45,
        "a retried flush or a retried PUT",
    )
    time.sleep(max(0.0, 4.0 - (time.monotonic() - down_at)))  # stay down a while
    emulator.start(port=port, var_dir=var_dir, idle_session_timeout_s=IDLE_SESSION_TIMEOUT_S)
    ids = stream.join() + [r["messageId"] for r in extra]
    assert_exactly_once(wh, ids, timeout=120)
    assert sink.alive(), sink.log()[-2000:]
    assert sink.stop() == 0, sink.log()[-3000:]


def test_flushes_prepared_ahead_under_a_rebalance_and_a_kill(ctx: dict[str, Any]) -> None:
    """A backlog loads in small flushes, each prepared while the one before is in the warehouse
    (from a snapshot of the buffers as consuming goes on); a second member joins and the first
    is killed meanwhile. Still every messageId exactly once, and flushes were prepared ahead."""
    topic = ctx["topics"].clean("track")
    # small flushes, and a memory bound that keeps the sink from reading the backlog all at
    # once: flushes chain, each prepared while the one before is in the warehouse
    small = {
        "SEGFLOW_SINK_FLUSH_ROWS": "100",
        "SEGFLOW_SINK_CONSUME_BATCH": "40",
        "SEGFLOW_SINK_MAX_BUFFERED_BYTES": "2000000",
    }
    ports = [free_port(), free_port()]
    first = start(ctx, SEGFLOW_SINK_METRICS_PORT=str(ports[0]), **small).wait_assigned()
    # the tables exist first (a flush that creates them is not prepared ahead)
    warm = [clean_event("track", 400_000 + i) for i in range(20)]
    produce(ctx["bootstrap"], topic, [encode_event(r) for r in warm])
    poll_until(lambda: wh_count(ctx["wh"]) == 20, 60, "the first records, creating the tables")
    backlog = [
        clean_event("track", 500_000 + i, anonymous_id=f"anon-{i % 40}") for i in range(5000)
    ]
    produce(ctx["bootstrap"], topic, [encode_event(r) for r in backlog])
    stream = Stream(ctx["bootstrap"], topic, 1500, 6).start()

    def used(port: int) -> float:
        samples = scrape_samples(port)
        return samples.get('segflow_sink_prepared_ahead_total{outcome="used"}', 0.0)

    poll_until(lambda: used(ports[0]) >= 3, 60, "flushes prepared ahead")
    second = start(ctx, SEGFLOW_SINK_METRICS_PORT=str(ports[1]), **small).wait_assigned()
    time.sleep(1.5)  # both load, their flushes prepared ahead across the rebalance
    first.kill()  # mid-flush or mid-preparation: its partitions move to the survivor
    # a backlog of the survivor's own (the first may have loaded the whole first one already:
    # a trickle flushes by age, with nothing ready to prepare ahead)
    later = [clean_event("track", 600_000 + i, anonymous_id=f"anon-{i % 40}") for i in range(3000)]
    produce(ctx["bootstrap"], topic, [encode_event(r) for r in later])
    ids = [r["messageId"] for r in warm + backlog + later] + stream.join()
    assert_exactly_once(ctx["wh"], ids)
    assert used(ports[1]) >= 1, second.log()[-2000:]
    assert second.stop() == 0, second.log()[-3000:]
