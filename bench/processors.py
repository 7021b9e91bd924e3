"""Throughput of one processor worker (all stages on) beside a bare aiokafka loop, same run.

    PYTHONPATH=. python bench/processors.py [--events 100000] [--partitions 6] [--profile]

1. Writes `--events` realistic raw track/identify/page records (with PII, duplicates, new
   properties) to fresh raw topics on the broker (SEGFLOW_KAFKA_BOOTSTRAP, default
   127.0.0.1:9092).
2. Ceiling: a bare aiokafka consume-and-produce loop (getmany, send each value on, no decoding)
   in a subprocess: events/s and its peak RSS.
3. `segflow process` as a subprocess (exactly_once, the embedded default rules, detector on):
   events/s from its first to its last committed offset, read from the consumer group, and its
   peak RSS (VmHWM). `--profile` runs it under cProfile and prints where the time goes.

Ends with `RESULT events_per_s=<n> ceiling_per_s=<n> ratio=<r>`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from runtime.settings import KafkaSettings  # noqa: E402
from runtime.topic_admin import TopicSpec, create_topics, expected_topics  # noqa: E402
from tests.integration.processors_harness import produce, raw_event  # noqa: E402


def make_records(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    context = {
        "ip": "203.0.113.9",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537",
        "library": {"name": "analytics.js", "version": "5.2.0"},
        "page": {"path": "/checkout", "url": "https://shop.example.com/checkout?step=2"},
        "locale": "en-US",
    }
    for i in range(n):
        anon = f"anon-{rnd.randrange(20_000)}"
        r = rnd.random()
        if r < 0.05:
            rec = raw_event(
                "identify",
                anonymous_id=anon,
                user_id=f"user-{rnd.randrange(10_000)}",
                traits={"email": f"u{i}@example.com", "plan": "pro", "phone": "+1 415 555 2671"},
                context=context,
            )
        elif r < 0.20:
            rec = raw_event(
                "page", anonymous_id=anon, properties={"title": "Checkout"}, context=context
            )
        else:
            rec = raw_event(
                "track",
                anonymous_id=anon,
                event="Order Completed",
                properties={
                    "order_id": f"o-{i}",
                    "revenue": round(rnd.random() * 100, 2),
                    "currency": "USD",
                    "products": [{"sku": "sku-1", "price": 9.5}],
                    "email": f"u{i}@example.com",
                    f"extra_{i % 50}": i,
                },
                context=context,
                late_s=rnd.random() * 30,
            )
        out.append(rec)
    for i in range(0, n, 50):  # 2% duplicates
        out.append(dict(out[i]))
    return out


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def committed(bootstrap: str, group: str, topics: list[str], partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    offsets = consumer.committed(tps, timeout=10)
    consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def wait_committed(
    bootstrap: str, group: str, topics: list[str], partitions: int, total: int, pid: int
) -> tuple[float, float, int, float]:
    """(t_first, t_last, events between them, peak RSS MB) from polling the group's offsets."""
    first_t, first_n, rss = None, 0, 0.0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        n = committed(bootstrap, group, topics, partitions)
        now = time.monotonic()
        rss = max(rss, peak_rss_mb(pid))
        if n > 0 and first_t is None:
            first_t, first_n = now, n
        if n >= total:
            assert first_t is not None
            return first_t, now, n - first_n, rss
        time.sleep(0.2)
    raise SystemExit(f"timed out: {committed(bootstrap, group, topics, partitions)}/{total}")


async def bare_loop(bootstrap: str, topics: list[str], out_topic: str, total: int) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"bare-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=1_048_576,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1_048_576, acks="all"
    )
    await consumer.start()
    await producer.start()
    seen = 0
    started = None
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batches.items():
                for rec in records:
                    await producer.send(out_topic, rec.value, key=rec.key, partition=tp.partition)
                seen += len(records)
            if seen and started is None:
                started = time.monotonic()
            await consumer.commit()
        await producer.flush()
        elapsed = time.monotonic() - (started or time.monotonic())
        print(f"BARE {seen} {elapsed:.3f}", flush=True)
    finally:
        await producer.stop()
        await consumer.stop()


def run_bare(bootstrap: str, topics: list[str], out_topic: str, total: int) -> tuple[float, float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--bare", bootstrap, out_topic, str(total), *topics],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    rss = 0.0
    while proc.poll() is None:
        try:
            rss = max(rss, peak_rss_mb(proc.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    out, _ = proc.communicate()
    line = next(ln for ln in out.splitlines() if ln.startswith("BARE"))
    _, seen, elapsed = line.split()
    return int(seen) / float(elapsed), rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--bare", nargs="+")
    args = parser.parse_args()
    if args.bare:
        bootstrap, out_topic, total, *topics = args.bare
        asyncio.run(bare_loop(bootstrap, topics, out_topic, int(total)))
        return

    bootstrap = os.environ.get("SEGFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    tag = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=f"bench_{tag}.")
    topics = kafka.topics
    bare_out = f"bench_{tag}.bare-out"
    create_topics(
        kafka,
        [
            *expected_topics(topics, partitions=args.partitions),
            TopicSpec(bare_out, args.partitions),
        ],
    )
    records = make_records(args.events)
    t0 = time.monotonic()
    total = produce(bootstrap, topics, records)
    print(f"produced {total} raw records in {time.monotonic() - t0:.1f}s")

    ceiling, bare_rss = run_bare(bootstrap, topics.all_raw(), bare_out, total)
    print(f"bare aiokafka loop: {ceiling:,.0f} events/s, peak RSS {bare_rss:.0f} MB")

    app_id = f"bench-{tag}"
    state = Path(f"/tmp/segflow-bench-{tag}")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SEGFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "SEGFLOW_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SEGFLOW_PROCESS_APP_ID": app_id,
        "SEGFLOW_PROCESS_STATE_DIR": str(state),
        "SEGFLOW_PROCESS_PII_HMAC_KEY": "bench-key",
        "SEGFLOW_PROCESS_METRICS_PORT": "0",
        "SEGFLOW_LOG_LEVEL": "WARNING",
    }
    prof = state / "worker.prof"
    state.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable]
    if args.profile:
        cmd += ["-m", "cProfile", "-o", str(prof)]
        cmd += [str(REPO / "cli" / "main.py"), "process"]
    else:
        cmd += ["-m", "cli.main", "process"]
    worker = subprocess.Popen(cmd, env=env, cwd=REPO)
    try:
        t_first, t_last, n, rss = wait_committed(
            bootstrap, app_id, topics.all_raw(), args.partitions, total, worker.pid
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    rate = n / max(t_last - t_first, 1e-9)
    guarantee = env.get("SEGFLOW_PROCESS_PROCESSING_GUARANTEE", "exactly_once")
    print(f"segflow process ({guarantee}, all stages): {rate:,.0f} events/s, peak RSS {rss:.0f} MB")
    if args.profile and prof.exists():
        stats = pstats.Stats(str(prof))
        stats.sort_stats("tottime").print_stats(25)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    doomed = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"bench_{tag}.")]
    doomed += [t for t in admin.list_topics(timeout=10).topics if t.startswith(app_id)]
    for fut in admin.delete_topics(doomed).values():
        fut.result(timeout=30)
    print(f"RESULT events_per_s={rate:.0f} ceiling_per_s={ceiling:.0f} ratio={rate / ceiling:.2f}")


if __name__ == "__main__":
    main()
