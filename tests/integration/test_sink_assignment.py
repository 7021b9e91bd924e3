"""Two sink instances share a busy topic: with the default `assignment_strategy` (roundrobin)
each instance gets part of every topic, so both load records of the one topic that carries the
traffic (cooperative-sticky evens only the number of partitions over all topics, and an
instance that joins later can be left with quiet topics alone). Real broker, real connector,
subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import free_port, unique_name
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

EVENTS = 400


@pytest.fixture
def ctx(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    run_id = unique_name("sinkrr")  # the session deletes its topics at its end
    c: dict[str, Any] = {
        "bootstrap": kafka_bootstrap,
        "prefix": f"{run_id}.",
        "database": f"SINK_RR_{run_id.upper()}",
        "group": f"rr-{run_id}",
        "tmp": tmp_path,
        "sinks": [],
    }
    c["topics"] = make_topics(kafka_bootstrap, c["prefix"], partitions=4)
    yield c
    for sink in c["sinks"]:
        sink.kill()


def start(c: dict[str, Any], port: int) -> SinkProcess:
    env = sink_env(
        c["bootstrap"],
        c["prefix"],
        c["database"],
        c["group"],
        SEGFLOW_SINK_METRICS_PORT=str(port),
        SEGFLOW_SINK_SESSION_TIMEOUT_MS="6000",
        SEGFLOW_SINK_HONOUR_SUPPRESSIONS="false",
    )
    sink = SinkProcess(env, c["tmp"] / f"sink-{len(c['sinks'])}.log").start()
    c["sinks"].append(sink)
    return sink


def track_records(port: int) -> float:
    return sum(
        v
        for k, v in scrape_samples(port).items()
        if k.startswith("segflow_sink_records_total{") and "segment.events.track" in k
    )


def test_two_instances_both_load_the_one_busy_topic(ctx: dict[str, Any]) -> None:
    ports = [free_port(), free_port()]
    first = start(ctx, ports[0]).wait_assigned()
    second = start(ctx, ports[1]).wait_assigned()
    # the first instance gave everything back and took its share again (an eager rebalance)
    poll_until(lambda: "revoked" in first.log(), 30, "the rebalance the second join caused")
    wh = Warehouse(ctx["database"])
    records = [clean_event("track", i, anonymous_id=f"anon-{i}") for i in range(EVENTS)]
    produce(ctx["bootstrap"], ctx["topics"].clean("track"), [encode_event(r) for r in records])

    def loaded() -> int:
        rows = wh.try_query('SELECT COUNT(*) FROM "WEB"."TRACKS"')
        return int(rows[0][0]) if rows else 0

    poll_until(lambda: loaded() == EVENTS, 60, f"{EVENTS} rows in tracks")
    shares = [track_records(p) for p in ports]
    assert sum(shares) == EVENTS, shares  # each record read by one instance only
    assert min(shares) >= EVENTS // 4, shares  # both took part of the busy topic
    assert wh.query('SELECT COUNT(DISTINCT "ID") FROM "WEB"."TRACKS"') == [(EVENTS,)]
    for sink in (second, first):
        assert sink.stop() == 0, sink.log()[-3000:]
