"""A worker killed with SIGKILL mid-stream and restarted: no event lost, none duplicated on the
clean topics (read with isolation.level=read_committed), and the dedupe state survives."""

from __future__ import annotations

import signal
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.codec import CLEAN_EVENT
from tests.integration.conftest import free_port
from tests.integration.processors_harness import (
    CODEC,
    TopicReader,
    make_env,
    produce,
    raw_event,
    start_worker,
    stop_worker,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3
EVENTS = 40_000


def committed_total(bootstrap: str, group: str, topics: list[str]) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    offsets = consumer.committed(tps, timeout=10)
    consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def end_total(bootstrap: str, topics: list[str]) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    total = 0
    for t in topics:
        for p in range(PARTITIONS):
            total += consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
    consumer.close()
    return total


def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = make_env(kafka_bootstrap, tmp_path, partitions=PARTITIONS)
    records = [
        raw_event(
            "identify" if i % 20 == 0 else "track",
            anonymous_id=f"anon-{i % 997}",
            user_id=f"user-{i % 997}" if i % 20 == 0 else None,
            event=None if i % 20 == 0 else "Order Completed",
            properties={"revenue": i, "email": f"u{i}@example.com"},
            traits={"email": f"u{i}@example.com"},
        )
        for i in range(EVENTS)
    ]
    produce(env.bootstrap, env.topics, records)
    expected = {r["messageId"] for r in records}
    extra = {"SEGFLOW_PROCESS_SESSION_TIMEOUT_S": "6", "SEGFLOW_PROCESS_BATCH_MAX": "500"}
    log = tmp_path / "worker.log"

    first = start_worker(env, log, **extra)
    watcher = TopicReader(env.bootstrap, env.topics.all_clean())
    try:
        seen = watcher.poll_until(lambda rs: len(rs) >= EVENTS // 10, timeout_s=90)
        assert len(seen) >= EVENTS // 10, "the first worker did not get going"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        watcher.close()
        if first.poll() is None:
            first.kill()
    assert len(seen) < EVENTS, "killed too late to test anything"

    port = free_port()
    second = start_worker(env, log, SEGFLOW_PROCESS_METRICS_PORT=str(port), **extra)
    try:
        # copies of events processed before the kill must be dropped by the recovered state
        produce(env.bootstrap, env.topics, [dict(r) for r in records[:300]])
        raw_topics = env.topics.all_raw()
        target = end_total(env.bootstrap, raw_topics)
        deadline = time.monotonic() + 120
        while committed_total(env.bootstrap, env.app_id, raw_topics) < target:
            assert second.poll() is None, "the restarted worker died"
            assert time.monotonic() < deadline, "the restarted worker did not finish"
            time.sleep(0.5)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        stop_worker(second)

    reader = TopicReader(env.bootstrap, env.topics.all_clean())
    try:
        # every offset is committed, so every transaction is decided: read to the end
        got = reader.poll_until(lambda rs: len(rs) >= EVENTS, timeout_s=60)
        got = reader.poll_until(lambda rs: False, timeout_s=3)
    finally:
        reader.close()
    ids = [CODEC.decode(CLEAN_EVENT, r.value)["messageId"] for r in got]
    assert len(set(ids)) == len(ids), f"{len(ids) - len(set(ids))} duplicates on clean topics"
    assert set(ids) == expected, f"{len(expected - set(ids))} events lost"
    assert 'segflow_process_recovered_entries_total{table="dedupe"}' in metrics
    duplicates = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("segflow_process_duplicates_total{")
    )
    assert duplicates >= 300
