"""Throughput of one processor worker (all stages on) beside two bare aiokafka loops, same run.

    PYTHONPATH=. python bench/processors.py [--events 100000] [--partitions 6]
        [--repo PATH] [--compression lz4|none] [--suppressed N] [--profile | --sample]
        [--rate R [--warmup S]]

1. Writes `--events` realistic raw track/identify/page records (with PII, duplicates, new
   properties) to fresh raw topics on the broker (SEGFLOW_KAFKA_BOOTSTRAP, default
   127.0.0.1:9092).
2. Ceilings, each a subprocess with the same aiokafka client and producer settings as the worker
   (linger, batch size, compression), committing offsets after each fetch:
   - bare: getmany, send each value on unchanged (no decoding): what the client can move;
   - codec: the same loop decoding each raw_event and encoding a clean_event from it with
     segflow's codec: the floor of any processor that reads and writes Avro, no stages. With
     the native codec (schemas/_avro_native.c, built by `make venv`) this loop costs about the
     bare loop plus 2 µs per event, so `ratio_to_codec` is now close to `ratio`.
   Each prints events/s, its CPU µs per event and its peak RSS.
3. `segflow process` as a subprocess (exactly_once, the embedded default rules, detector on),
   run from `--repo` (default: this tree; point it at an export of another commit to compare
   before and after in one session): events/s from its first to its last committed offset,
   read from the consumer group, its CPU µs per event over the same span (robust when others
   share the machine) and its peak RSS (VmHWM). `--profile` runs it under cProfile;
   `--sample` attaches py-spy (if installed) and prints where the main thread's time goes.
   `--suppressed N` puts N other users on the suppression list first, so the worker checks
   every event against a non-empty list. `--rate R` writes the events at R/s while the worker
   runs (live traffic: small fetches, every partition's transaction in each commit) instead of
   as a backlog beforehand, measures from `--warmup` seconds on, and runs the two loops after.

Ends with `RESULT events_per_s=<n> ceiling_per_s=<n> ratio=<r> codec_per_s=<n>
ratio_to_codec=<r> cpu_us_per_event=<n> codec_cpu_us_per_event=<n> cpu_ratio_to_codec=<r>
peak_rss_mb=<n>`: `ratio` against the bare loop, `ratio_to_codec` against the codec loop (rates,
same run), `cpu_ratio_to_codec` the codec loop's CPU per event over the worker's (the figure
least moved by others sharing the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from bench import cpu_seconds, drop_topics, peak_rss_mb, stage_floor, thread_cpu_seconds  # noqa: E402
from runtime.rules import load_rules  # noqa: E402
from runtime.settings import KafkaSettings  # noqa: E402
from runtime.suppressions import publish_suppressions  # noqa: E402
from runtime.topic_admin import TopicSpec, create_topics, expected_topics  # noqa: E402
from schemas.codec import RAW_EVENT  # noqa: E402
from schemas.topics import HEADER_SOURCE, Topics  # noqa: E402
from tests.integration.processors_harness import (  # noqa: E402
    CODEC,
    produce,
    raw_event,
    record_key,
)

#: the worker variants of --stages: every stage, then fewer (what the stages cost)
STAGES = ("all", "no-masking", *stage_floor.VARIANTS)


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


SENT_AT = "bench-sent-at"  # a raw record's header: when it was written (the clean one keeps it)


def paced_produce(
    bootstrap: str, topics: Topics, records: list[dict[str, Any]], rate: float
) -> threading.Thread:
    """A thread writing `records` to the raw topics at `rate` events/s (a slice every 50 ms),
    encoded beforehand so the pace holds; each carries its write time in a header."""
    from confluent_kafka import Producer

    encoded = [
        (topics.raw(r["type"]), record_key(r), CODEC.encode(RAW_EVENT, r), r["source"].encode())
        for r in records
    ]

    def run() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
        started = time.monotonic()
        sent = 0
        while sent < len(encoded):
            due = min(len(encoded), int((time.monotonic() - started) * rate) + 1)
            at = f"{time.time():.6f}".encode()
            for topic, key, value, source in encoded[sent:due]:
                headers = [(HEADER_SOURCE, source), (SENT_AT, at)]
                producer.produce(topic, key=key, value=value, headers=headers)
            sent = due
            producer.poll(0)
            time.sleep(0.05)
        producer.flush()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class Visibility:
    """Reads the clean topics as the sink does (read_committed) and records, for each clean
    event, the seconds from its raw record's write to now: the processor's share of
    freshness (fetch, batch, hand-off, and the transaction's commit)."""

    def __init__(self, bootstrap: str, topics: list[str], since: float) -> None:
        from confluent_kafka import Consumer

        self.latencies: list[float] = []
        self.since = since
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-visibility-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe(topics)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(1000, timeout=0.05):
                now = time.time()
                if msg.error():
                    continue
                raw = msg.headers() or []
                for name, value in raw.items() if isinstance(raw, dict) else raw:
                    if name == SENT_AT and value is not None and float(value) >= self.since:
                        self.latencies.append(now - float(value))
        self._consumer.close()

    def stop(self) -> tuple[float, float]:
        """(p50, p95) seconds."""
        self._stop.set()
        self._thread.join(10)
        lat = sorted(self.latencies)
        if not lat:
            return float("nan"), float("nan")
        return lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.95 * len(lat)))]


def committed(bootstrap: str, group: str, topics: list[str], partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    offsets = consumer.committed(tps, timeout=10)
    consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def wait_committed(
    bootstrap: str,
    group: str,
    topics: list[str],
    partitions: int,
    total: int,
    pid: int,
    on_first: Callable[[], None] | None = None,
    not_before: float = 0.0,
) -> tuple[float, float, int, float, float, float]:
    """(t_first, t_last, events between them, CPU seconds between them, the main thread's CPU
    seconds between them, peak RSS MB) from polling the group's offsets; t_first is the first
    commit seen at or after `not_before` (monotonic), when `on_first` is called."""
    first_t, first_n, first_cpu, first_main, rss = None, 0, 0.0, 0.0, 0.0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        n = committed(bootstrap, group, topics, partitions)
        now = time.monotonic()
        cpu = cpu_seconds(pid)
        rss = max(rss, peak_rss_mb(pid))
        if n > 0 and first_t is None and now >= not_before:
            first_t, first_n, first_cpu = now, n, cpu
            first_main = thread_cpu_seconds(pid).get(pid, 0.0)
            if on_first is not None:
                on_first()
        if n >= total:
            assert first_t is not None
            main = thread_cpu_seconds(pid).get(pid, 0.0) - first_main
            return first_t, now, n - first_n, cpu - first_cpu, main, rss
        time.sleep(0.1)
    raise SystemExit(f"timed out: {committed(bootstrap, group, topics, partitions)}/{total}")


async def bare_loop(
    bootstrap: str, topics: list[str], out_topic: str, total: int, mode: str, compression: str
) -> None:
    """Consume and produce with aiokafka: values unchanged (bare) or decoded and re-encoded."""
    from datetime import UTC, datetime

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from schemas.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec

    codec = AvroCodec()
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"bare-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=1_048_576,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        max_batch_size=1_048_576,
        acks="all",
        compression_type=None if compression == "none" else compression,
    )
    await consumer.start()
    await producer.start()
    seen = 0
    started = None
    cpu0 = 0.0
    annotations: dict[str, Any] = {
        "canonicalUserId": None,
        "maskedFields": [],
        "piiKeyVersion": None,
        "unmapped": "{}",
    }
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            if batches and started is None:
                started, cpu0 = time.monotonic(), time.process_time()
            now = datetime.now(UTC)
            for tp, records in batches.items():
                for rec in records:
                    value = rec.value
                    if mode == "codec":
                        clean = codec.decode(RAW_EVENT, value)
                        clean.update(annotations, processedAt=now)
                        value = codec.encode(CLEAN_EVENT, clean)
                    await producer.send(out_topic, value, key=rec.key, partition=tp.partition)
                seen += len(records)
            await consumer.commit()
        await producer.flush()
        elapsed = time.monotonic() - (started or time.monotonic())
        cpu = time.process_time() - cpu0
        print(f"BARE {seen} {elapsed:.3f} {cpu:.3f}", flush=True)
    finally:
        await producer.stop()
        await consumer.stop()


def run_bare(
    bootstrap: str, topics: list[str], out_topic: str, total: int, mode: str, compression: str
) -> tuple[float, float, float]:
    """(events/s, CPU µs per event, peak RSS MB) of a bare loop in a subprocess."""
    args = [mode, compression, bootstrap, out_topic, str(total), *topics]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--bare", *args],
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
    _, seen, elapsed, cpu = line.split()
    return int(seen) / float(elapsed), float(cpu) / int(seen) * 1e6, rss


def summarize_samples(path: Path, main_us: float, top: int = 25) -> None:
    """Print where the worker's main thread spent its samples (py-spy raw format), in shares
    and in µs per event (`main_us`, the main thread's CPU per event from /proc, spread over its
    samples: py-spy takes a thread waiting in C code for busy)."""
    threads: dict[str, int] = {}
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    main_total = 0
    frame_re = re.compile(r" \((.*):\d+\)$")
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, count = line.rsplit(" ", 1)
        n = int(count)
        frames = stack.split(";")
        thread = frames[0].split(":", 1)[-1].strip()
        threads[thread] = threads.get(thread, 0) + n
        if "MainThread" not in frames[0]:
            continue
        main_total += n
        names = [frame_re.sub(r" (\1)", f) for f in frames[1:]]
        if names:
            own[names[-1]] = own.get(names[-1], 0) + n
        for name in set(names):
            inclusive[name] = inclusive.get(name, 0) + n
    us = main_us / max(main_total, 1)  # µs per event that one main-thread sample stands for
    print(f"py-spy samples (non-idle) per thread: {threads}")
    print(f"main thread: own time, top {top} (share of the main thread, µs per event)")
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / max(main_total, 1):5.1f}% {n * us:5.1f} µs  {name}")
    print("main thread: inclusive time of segflow's and the clients' functions")
    ours = ("processors/", "schemas/", "aiokafka/", "faust/", "prometheus_client/", "mode/")
    shown = [kv for kv in inclusive.items() if any(o in kv[0] for o in ours)]
    for name, n in sorted(shown, key=lambda kv: -kv[1])[: top * 2]:
        print(f"  {100 * n / max(main_total, 1):5.1f}% {n * us:5.1f} µs  {name}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--repo", type=Path, default=REPO, help="tree the worker runs from")
    parser.add_argument("--compression", default="none", help="worker and loops: none, lz4...")
    parser.add_argument(
        "--suppressed",
        type=int,
        default=0,
        help="users put on the suppression list first (none of the bench's own users)",
    )
    parser.add_argument("--profile", action="store_true", help="run the worker under cProfile")
    parser.add_argument("--sample", action="store_true", help="sample the worker with py-spy")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="write the events at this rate while the worker runs (live traffic, not a backlog)",
    )
    parser.add_argument(
        "--warmup", type=float, default=8.0, help="with --rate: seconds before measuring"
    )
    parser.add_argument(
        "--stages",
        default="all",
        help="comma list of worker variants run one after the other on the same records (each "
        "its own consumer group): all, no-masking (no PII rule, detector or name screen), "
        "dedupe, framework (bench/stage_floor.py); the first gives RESULT's figures",
    )
    parser.add_argument("--bare", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        mode, compression, bootstrap, out_topic, total, *topics = args.bare
        asyncio.run(bare_loop(bootstrap, topics, out_topic, int(total), mode, compression))
        return

    variants = [v.strip() for v in args.stages.split(",") if v.strip()]
    unknown = [v for v in variants if v not in STAGES]
    if unknown or not variants or len(set(variants)) != len(variants):
        parser.error(f"--stages: each of {', '.join(STAGES)} at most once (got {args.stages!r})")
    if len(variants) > 1 and args.rate is not None:
        parser.error("--stages with more than one variant runs on a backlog (no --rate)")

    bootstrap = os.environ.get("SEGFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    tag = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=f"bench_{tag}.")
    topics = kafka.topics
    bare_out = f"bench_{tag}.bare-out"
    create_topics(
        kafka,
        [
            *expected_topics(topics, partitions=args.partitions),
            TopicSpec(f"{bare_out}-bare", args.partitions),
            TopicSpec(f"{bare_out}-codec", args.partitions),
        ],
    )
    if args.suppressed:
        publish_suppressions(
            kafka, {f"gone-{i}": [f"gone-anon-{i}"] for i in range(args.suppressed)}, reason="bench"
        )
    records = make_records(args.events)
    total = len(records)
    ceilings: dict[str, float] = {}
    ceiling_cpu: dict[str, float] = {}

    def run_ceilings() -> None:
        for mode in ("bare", "codec"):
            rate_, cpu_, rss_ = run_bare(
                bootstrap, topics.all_raw(), f"{bare_out}-{mode}", total, mode, args.compression
            )
            ceilings[mode], ceiling_cpu[mode] = rate_, cpu_
            print(
                f"{mode} aiokafka loop: {rate_:,.0f} events/s, {cpu_:.0f} µs CPU/event, "
                f"peak RSS {rss_:.0f} MB"
            )

    if args.rate is None:
        t0 = time.monotonic()
        produce(bootstrap, topics, records)
        print(f"produced {total} raw records in {time.monotonic() - t0:.1f}s")
        run_ceilings()

    repo = args.repo.resolve()
    base_env = {
        **os.environ,
        "PYTHONPATH": str(repo),
        "SEGFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "SEGFLOW_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SEGFLOW_PROCESS_PII_HMAC_KEY": "bench-key-0123456789abcdef0123456789",
        "SEGFLOW_PROCESS_METRICS_PORT": "0",
        "SEGFLOW_LOG_LEVEL": "WARNING",
        "SEGFLOW_PROCESS_COMPRESSION": args.compression,
    }
    guarantee = base_env.get("SEGFLOW_PROCESS_PROCESSING_GUARANTEE", "exactly_once")
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if args.sample and not Path(spy).exists():
        raise SystemExit("--sample needs py-spy on PATH (pip install py-spy)")
    visible = (float("nan"), float("nan"))

    def run_worker(variant: str, first: bool) -> tuple[float, float, float, float]:
        """One `segflow process` (`variant` of its stages) over every raw record, in its own
        consumer group: its events/s, CPU and main-thread µs per event, peak RSS."""
        nonlocal visible
        app_id = f"bench-{tag}-{variant}"
        state = Path(f"/tmp/segflow-bench-{tag}-{variant}")
        state.mkdir(parents=True, exist_ok=True)
        env = {
            **base_env,
            "SEGFLOW_PROCESS_APP_ID": app_id,
            "SEGFLOW_PROCESS_STATE_DIR": str(state),
        }
        if variant == "no-masking":
            env["SEGFLOW_RULES_FILE"] = str(without_masking(state))
        prof = state / "worker.prof"
        cmd = [sys.executable]
        if variant in stage_floor.VARIANTS:
            cmd += ["-m", "bench.stage_floor", variant]
        elif first and args.profile:
            cmd += ["-m", "cProfile", "-o", str(prof), str(repo / "cli" / "main.py"), "process"]
        else:
            cmd += ["-m", "cli.main", "process"]
        worker = subprocess.Popen(cmd, env=env, cwd=repo)
        not_before = 0.0
        visibility = None
        if first and args.rate is not None:
            paced_produce(bootstrap, topics, records, args.rate)
            not_before = time.monotonic() + args.warmup
            visibility = Visibility(bootstrap, topics.all_clean(), time.time() + args.warmup)
            print(f"writing {total} raw records at {args.rate:,.0f}/s while the worker runs")
        sampler: subprocess.Popen[bytes] | None = None
        samples = state / "samples.txt"

        def start_sampler() -> None:
            """py-spy from the first committed offsets on: the steady state, not the start-up."""
            nonlocal sampler
            spy_args = ["--format", "raw", "--threads", "--rate", "200", "--output", str(samples)]
            sampler = subprocess.Popen(
                [spy, "record", "--pid", str(worker.pid), *spy_args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        try:
            t_first, t_last, n, cpu, main_cpu, rss = wait_committed(
                bootstrap,
                app_id,
                topics.all_raw(),
                args.partitions,
                total,
                worker.pid,
                start_sampler if first and args.sample else None,
                not_before,
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            if sampler is not None:
                sampler.wait(60)
        if visibility is not None:
            visible = visibility.stop()
        rate = n / max(t_last - t_first, 1e-9)
        cpu_us = cpu / max(n, 1) * 1e6
        main_us = main_cpu / max(n, 1) * 1e6
        print(
            f"segflow process ({guarantee}, stages: {variant}, {args.compression}, from {repo}"
            + (f", live at {args.rate:,.0f}/s" if first and args.rate is not None else ", backlog")
            + "): "
            f"{rate:,.0f} events/s, {cpu_us:.0f} µs CPU/event ({main_us:.0f} µs in its main "
            f"thread), peak RSS {rss:.0f} MB"
        )
        if first and args.profile and prof.exists():
            stats = pstats.Stats(str(prof))
            stats.sort_stats("tottime").print_stats(25)
        if sampler is not None and samples.exists():
            summarize_samples(samples, main_us)
        return rate, cpu_us, main_us, rss

    measured = {v: run_worker(v, i == 0) for i, v in enumerate(variants)}
    if args.rate is not None:  # the ceilings read the same records, all written by now
        run_ceilings()
        print(
            f"raw written -> clean readable (read_committed): p50 {visible[0]:.2f}s "
            f"p95 {visible[1]:.2f}s"
        )
    drop_topics(bootstrap, [f"bench_{tag}.", f"bench-{tag}-"])
    ceiling = ceilings["bare"]
    codec_ceiling, codec_cpu = ceilings["codec"], ceiling_cpu["codec"]
    if len(variants) > 1:
        print(f"what the stages cost (codec loop: {codec_cpu:.0f} µs CPU/event):")
        for variant, (_, cpu_us_, _, _) in measured.items():
            print(
                f"  {variant:<11} {cpu_us_:5.0f} µs CPU/event, "
                f"cpu_ratio_to_codec {codec_cpu / max(cpu_us_, 1e-9):.2f}"
            )
    rate, cpu_us, main_us, rss = measured[variants[0]]
    print(
        f"RESULT events_per_s={rate:.0f} ceiling_per_s={ceiling:.0f} ratio={rate / ceiling:.2f} "
        f"codec_per_s={codec_ceiling:.0f} ratio_to_codec={rate / codec_ceiling:.2f} "
        f"cpu_us_per_event={cpu_us:.0f} main_thread_us_per_event={main_us:.0f} "
        f"codec_cpu_us_per_event={codec_cpu:.0f} "
        f"cpu_ratio_to_codec={codec_cpu / max(cpu_us, 1e-9):.2f} peak_rss_mb={rss:.0f}"
        + (
            f" visible_p50_s={visible[0]:.2f} visible_p95_s={visible[1]:.2f}"
            if args.rate is not None
            else ""
        )
        + (
            " cpu_us_by_stages=" + ",".join(f"{v}:{m[1]:.0f}" for v, m in measured.items())
            if len(variants) > 1
            else ""
        )
    )


def without_masking(folder: Path) -> Path:
    """The worker's rules (SEGFLOW_RULES_FILE or the embedded default) with no PII rule, no
    detector and no name screen, written as a rules file in `folder`."""
    configured = os.environ.get("SEGFLOW_RULES_FILE")
    rules = load_rules(Path(configured) if configured else None)
    data = rules.model_dump(mode="json")
    data["pii"] = {"rules": [], "detector": {"enabled": False}, "names": {"enabled": False}}
    path = folder / "rules-without-masking.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    return path


if __name__ == "__main__":
    main()
