"""Benchmark of the whole pipeline: sustained events/s, segflow's own CPU per event, and
freshness at half the sustained rate measured in the same run.

    PYTHONPATH=. python bench/e2e.py [--events 200000] [--rate R] [--duration 30] [--runs 1]

Runs on the shared local broker and emulator (`make services-start`), with a fresh topic
prefix and warehouse database: the edge (`segflow ingest`), one processor worker (`segflow
process`) and one sink (`segflow sink`) as subprocesses at their default settings.

0. Warm-up: --warmup-events (10,000 by default) posted and loaded first, not measured: the
   warehouse's first tables and the components' first events are then behind, in every run
   alike. Without it the first run after a broker start had segflow's own CPU ~10% above the
   next runs' (151-157 against 132-144 µs); with it, 132-136 in three runs after a broker
   start. The broker's JIT takes longer than this: in such a first run the broker still spends
   2-4x its later CPU per event (not counted in segflow's own, but it slows the run).
1. Sustained throughput: --events realistic 1-2 KB track events posted to /v1/batch (100 a
   request) as fast as the edge takes them; the figure is events / (time from the first send
   until the last event is queryable in the warehouse). Over that same span, the CPU seconds
   (/proc, all threads) of the edge, the processor and the sink, summed and divided by the
   events, are segflow's own CPU per event; the broker's and the emulator's (and the load
   generator's, this process) are reported beside it, not counted in it.
2. Freshness: --rate events/s (default: half the sustained rate just measured) for --duration
   seconds; twice a second one probe event goes out and a poller queries the warehouse every
   100 ms until it is there; freshness = queryable time minus send time, p50 and p95. The
   sinks' flushes meanwhile are broken down from their /metrics: per flush, its phases and
   each kind of statement (how many, how long each), which is what freshness waits on.
3. Peak RSS (VmHWM) and CPU seconds of each component; whether web.tracks holds every accepted
   event exactly once (rows = distinct ids = events).

`--workers N --sinks M` run N processor workers and M sinks in their groups (the scaling check).
`--event-names N` spreads the track events over N names (default: a shop's five), so a flush
holds N event tables: what a source with many kinds of events loads.
`--runs N` repeats the whole run N times, one after the other (fresh topics and database each),
and reports each figure's median, with the ranges of the two goal figures in RESULT
(`runs=N own_cpu_us_range=<lo>-<hi> freshness_p95_range_s=<lo>-<hi>`) and a table of the runs
in the results file: one run on this shared machine moves 10-20% from the next.
Writes bench/results/e2e.md (e2e-<N>x<M>.md when scaled out, e2e[-<N>x<M>]-<K>-events.md with
--event-names K) and ends with
`RESULT events_per_s=<n> own_cpu_us_per_event=<n> freshness_p50_s=<x> freshness_p95_s=<y>
freshness_p95_at_half_s=<y> exactly_once=yes|no ...` (freshness_p95_at_half_s is the p95 when
the rate was half the sustained one, else "na"), then each process's CPU µs per event and peak
RSS MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import cpu_seconds, drop_topics, peak_rss_mb, service_pids  # noqa: E402
from bench.ingest import EVENTS, Connection, http_request, realistic_event  # noqa: E402
from runtime.settings import KafkaSettings, WarehouseSettings  # noqa: E402
from runtime.topic_admin import create_topics, expected_topics  # noqa: E402
from sinks.snowflake.session import WarehouseSession  # noqa: E402
from tests.integration.sink_support import scrape_samples  # noqa: E402

#: segflow's own processes (the broker, the emulator and the load generator are not)
OWN = ("ingest", "process", "sink")
PLACEHOLDER = b"@@@@@@@@@@@@"  # 12 bytes replaced per request so every messageId is unique


class Component:
    """One `segflow <command>` subprocess (`name`: the command and an instance number, when
    there are several) with its readiness URL."""

    def __init__(
        self, command: str, name: str, env: dict[str, str], port: int, log_dir: Path
    ) -> None:
        self.command, self.name, self.port = command, name, port
        self.log = (log_dir / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", command],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                url = f"http://127.0.0.1:{self.port}/readyz"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready after {timeout}s")

    def stat(self) -> tuple[float, float]:
        """(peak RSS MB, CPU seconds)."""
        return peak_rss_mb(self.proc.pid), cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def event_names(n: int) -> list[str]:
    """`n` track event names (0: bench.ingest's five, a shop's funnel)."""
    return [f"Feature {i} Used" for i in range(1, n + 1)] if n else list(EVENTS)


def templates(n: int, per_batch: int, names: list[str], seed: int = 7) -> list[bytes]:
    """Batch bodies whose messageIds contain PLACEHOLDER, made unique per request; track events
    named from `names`."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for b in range(n):
        events = []
        for j in range(per_batch):
            event = realistic_event(rng, now, names)
            event["messageId"] = f"{PLACEHOLDER.decode()}-{b:03d}-{j:03d}"
            events.append(event)
        out.append(orjson.dumps({"batch": events, "sentAt": now.isoformat()}))
    return out


async def blast(
    port: int, bodies: list[bytes], requests: int, connections: int, mark: str = ""
) -> float:
    """Post `requests` bodies as fast as the edge answers; returns seconds taken. Each request's
    messageIds carry `mark` and its number (the warm-up's apart from the measured ones)."""
    counter = iter(range(requests))
    refused = 0
    width = 12 - len(mark)

    async def worker() -> None:
        nonlocal refused
        conn = await Connection.open(port)
        for i in counter:
            body = bodies[i % len(bodies)].replace(PLACEHOLDER, f"{mark}{i:0{width}d}".encode())
            while await conn.request(http_request("/v1/batch", body)) != 200:
                refused += 1
                await asyncio.sleep(0.2)
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    if refused:
        print(f"  ({refused} requests answered non-200 and were re-sent)")
    return time.perf_counter() - start


def count(session: WarehouseSession, schema: str) -> int:
    try:
        return int(session.fetch_all(f"SELECT COUNT(*) FROM {schema}.tracks")[0][0])
    except Exception:
        return 0


def exactly_once(warehouse: WarehouseSettings) -> tuple[int, int]:
    """(rows, distinct ids) in web.tracks."""
    with WarehouseSession(warehouse, "bench") as session:
        rows, distinct = session.fetch_all("SELECT COUNT(*), COUNT(DISTINCT id) FROM web.tracks")[0]
    return int(rows), int(distinct)


def wait_loaded(warehouse: WarehouseSettings, expected: int, timeout: float) -> float:
    """Poll until `expected` rows are in web.tracks; returns the time it happened."""
    with WarehouseSession(warehouse, "bench") as session:
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            n = count(session, "web")
            if n >= expected:
                return time.perf_counter()
            if n != last:
                if n // 20_000 != last // 20_000:
                    print(f"  {n:,} / {expected:,} rows queryable", flush=True)
                last = n
            time.sleep(0.25)
    raise TimeoutError(f"only {last} of {expected} rows loaded after {timeout}s")


class Prober:
    """Sends nothing itself: watches the warehouse for probe ids and records when they appear."""

    def __init__(self, warehouse: WarehouseSettings) -> None:
        self.sent: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._warehouse = warehouse
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, probe_id: str, at: float) -> None:
        with self._lock:
            self.sent[probe_id] = at

    def _run(self) -> None:
        with WarehouseSession(self._warehouse, "bench-probe") as session:
            while not self._stop.is_set():
                with self._lock:
                    pending = [p for p in self.sent if p not in self.seen]
                if pending:
                    marks = ",".join("?" * len(pending))
                    try:
                        rows = session.fetch_all(
                            f"SELECT id FROM web.tracks WHERE id IN ({marks})", pending
                        )
                    except Exception:
                        rows = []
                    now = time.perf_counter()
                    for (probe_id,) in rows:
                        self.seen.setdefault(probe_id, now)
                time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def freshness(self) -> list[float]:
        return sorted(self.seen[p] - self.sent[p] for p in self.seen)

    def in_order(self) -> list[float]:
        """Each probe's freshness, in the order they were sent (where the slow ones cluster)."""
        return [
            self.seen[p] - at
            for p, at in sorted(self.sent.items(), key=lambda i: i[1])
            if p in self.seen
        ]


async def fixed_rate(
    port: int, bodies: list[bytes], rate: float, duration: float, prober: Prober, per: int
) -> int:
    """Open loop at `rate` events/s; a probe batch of one event twice a second."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(16):
        pool.put_nowait(await Connection.open(port))
    requests = int(rate * duration / per)
    t0 = time.perf_counter() + 0.1
    sent = 0

    async def one(i: int) -> None:
        nonlocal sent
        await asyncio.sleep(max(0.0, t0 + i * per / rate - time.perf_counter()))
        body = bodies[i % len(bodies)].replace(PLACEHOLDER, f"f{i:011d}".encode())
        conn = await pool.get()
        if await conn.request(http_request("/v1/batch", body)) == 200:
            sent += per
        pool.put_nowait(conn)

    async def probes() -> None:
        conn = await Connection.open(port)
        end = t0 + duration
        while time.perf_counter() < end:
            probe_id = f"probe-{uuid.uuid4()}"
            event = {"type": "track", "event": "Probe", "userId": "p", "messageId": probe_id}
            at = time.perf_counter()
            if await conn.request(http_request("/v1/track", orjson.dumps(event))) == 200:
                prober.add(probe_id, at)
            await asyncio.sleep(0.5)
        conn.close()

    await asyncio.gather(probes(), *(one(i) for i in range(requests)))
    while not pool.empty():
        pool.get_nowait().close()
    return sent


#: the sinks' samples that say where a flush's time goes: flushes, their phases, statements
FLUSH_SAMPLE = re.compile(
    r"segflow_sink_(?:flush_duration_seconds_(?:count|sum)|flush_size_records_sum"
    r'|statement_duration_seconds_(?:count|sum)\{kind="\w+"\}'
    r'|flush_phase_seconds_total\{phase="\w+"\})'
)


def sink_flushes(sinks: list[Component]) -> dict[str, float]:
    """The flush samples (:data:`FLUSH_SAMPLE`) so far, summed over the sinks' /metrics."""
    out: dict[str, float] = {}
    for sink in sinks:
        for sample, value in scrape_samples(sink.port).items():
            if FLUSH_SAMPLE.fullmatch(sample):
                out[sample] = out.get(sample, 0.0) + value
    return out


def flush_report(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """Where the flushes between two :func:`sink_flushes` went: per flush on average, its
    phases (prepare may run ahead, beside the flush in flight) and each kind of statement
    (how many, how long each), the costliest first."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    n = delta.get("segflow_sink_flush_duration_seconds_count", 0.0)
    if not n:
        return []
    seconds = delta["segflow_sink_flush_duration_seconds_sum"]
    records = delta.get("segflow_sink_flush_size_records_sum", 0.0)
    phases = {m[1]: v for k, v in delta.items() if (m := re.search(r'phase="(\w+)"', k)) and v > 0}
    kinds: dict[str, list[float]] = {}
    for k, v in delta.items():
        m = re.fullmatch(r'segflow_sink_statement_duration_seconds_(count|sum)\{kind="(\w+)"\}', k)
        if m and v > 0:
            kinds.setdefault(m[2], [0.0, 0.0])[1 if m[1] == "sum" else 0] = v
    by_time = sorted(kinds.items(), key=lambda kv: -kv[1][1])
    return [
        f"  sink flushes while probed: {n:.0f}, {seconds / n:.2f} s and "
        f"{records / n:,.0f} records each on average",
        "    phases per flush: " + ", ".join(f"{p} {s / n:.2f} s" for p, s in phases.items()),
        "    statements per flush: "
        + ", ".join(
            f"{kind} {count / n:.1f} x {total / count * 1000:.0f} ms"
            for kind, (count, total) in by_time
            if count
        ),
    ]


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--rate", type=float, default=None, help="freshness phase rate (default: half sustained)"
    )
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="processor workers (one group)")
    parser.add_argument("--sinks", type=int, default=1, help="sink instances (one group)")
    parser.add_argument(
        "--event-names",
        type=int,
        default=0,
        help="track events spread over this many names, each a table of its own (0: a shop's five)",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        help="the components' SEGFLOW_LOG_LEVEL (INFO: a line per sink flush); their logs stay "
        "in the directory printed at start",
    )
    parser.add_argument(
        "--warmup-events",
        type=int,
        default=10_000,
        help="events posted and loaded before the sustained phase, not measured (the "
        "warehouse's first tables, the components' first events); 0: none",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="whole runs one after the other (fresh topics and database each); RESULT gives "
        "their medians and the goal figures' ranges",
    )
    args = parser.parse_args()
    runs: list[Run] = []
    for i in range(args.runs):
        if args.runs > 1:
            print(f"=== run {i + 1} of {args.runs}")
        runs.append(run_once(args))
    med = median_run(runs)
    write_results(args, med, runs)
    print(result_line(args, med, runs))
    return 0


@dataclass
class Run:
    """The figures of one run."""

    sustained: float  # events/s, send to queryable
    accepted: float  # events/s the edge accepted
    rate: float  # of the freshness phase
    p50: float
    p95: float
    probes: int
    once: bool
    cpu_per_event: dict[str, float]  # µs, per process
    stats: dict[str, tuple[float, float]]  # peak RSS MB, CPU s, per component

    @property
    def own(self) -> float:
        return sum(self.cpu_per_event[n] for n in OWN)


def median_run(runs: list[Run]) -> Run:
    """Each figure's median over `runs` (one run: itself); exactly once only if in every run."""
    if len(runs) == 1:
        return runs[0]
    mid = statistics.median
    return Run(
        sustained=mid([r.sustained for r in runs]),
        accepted=mid([r.accepted for r in runs]),
        rate=mid([r.rate for r in runs]),
        p50=mid([r.p50 for r in runs]),
        p95=mid([r.p95 for r in runs]),
        probes=sum(r.probes for r in runs),
        once=all(r.once for r in runs),
        cpu_per_event={n: mid([r.cpu_per_event[n] for r in runs]) for n in runs[0].cpu_per_event},
        stats={
            n: (max(r.stats[n][0] for r in runs), mid([r.stats[n][1] for r in runs]))
            for n in runs[0].stats
        },
    )


def result_line(args: argparse.Namespace, med: Run, runs: list[Run]) -> str:
    """The RESULT line: one run's figures, or the medians of several (own CPU per event being
    the median of the runs' own CPU, not the sum of the per-process medians) with the ranges
    of the two goal figures."""
    own = statistics.median([r.own for r in runs])
    at_half = f"{med.p95:.2f}" if args.rate is None else "na"
    ranges = ""
    if len(runs) > 1:
        owns = [r.own for r in runs]
        p95s = [r.p95 for r in runs]
        ranges = (
            f"runs={len(runs)} own_cpu_us_range={min(owns):.0f}-{max(owns):.0f} "
            f"freshness_p95_range_s={min(p95s):.2f}-{max(p95s):.2f} "
        )
    return (
        f"RESULT events_per_s={med.sustained:.0f} own_cpu_us_per_event={own:.0f} "
        f"freshness_p50_s={med.p50:.2f} freshness_p95_s={med.p95:.2f} "
        f"freshness_p95_at_half_s={at_half} exactly_once={'yes' if med.once else 'no'} "
        + ranges
        + f"workers={args.workers} sinks={args.sinks} partitions={args.partitions} "
        + " ".join(f"cpu_us_{n}={us:.0f}" for n, us in med.cpu_per_event.items())
        + " "
        + " ".join(f"peak_rss_mb_{n}={rss:.0f}" for n, (rss, _) in med.stats.items())
    )


def run_once(args: argparse.Namespace) -> Run:
    """One whole run: components started, the sustained phase, the freshness phase, stopped."""
    tag = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(topic_prefix=f"bench-e2e-{tag}.")
    database = f"BENCH_E2E_{tag.upper()}"
    warehouse = WarehouseSettings(database=database)
    create_topics(kafka, expected_topics(kafka.topics, partitions=args.partitions))
    ingest_port = free_port()
    env = {
        "SEGFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "SEGFLOW_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SEGFLOW_SNOWFLAKE_DATABASE": database,
        "SEGFLOW_INGEST_HOST": "127.0.0.1",
        "SEGFLOW_INGEST_PORT": str(ingest_port),
        "SEGFLOW_PROCESS_APP_ID": f"bench-e2e-{tag}",
        "SEGFLOW_PROCESS_PII_HMAC_KEY": "bench-key-0123456789abcdef0123456789",
        "SEGFLOW_SINK_GROUP_ID": f"bench-e2e-sink-{tag}",
        "SEGFLOW_LOG_LEVEL": args.log_level,
        "SEGFLOW_ALLOW_DEV_DEFAULTS": "true",  # the embedded rules' development key
        "SEGFLOW_SNOWFLAKE_STRICT": "false",  # the emulator's Snowflake-rules check: a test aid
    }
    log_dir = Path(tempfile.mkdtemp(prefix="segflow-bench-e2e-"))
    comps: dict[str, Component] = {}
    for command, count in (("sink", args.sinks), ("process", args.workers), ("ingest", 1)):
        for i in range(count):
            name = command if count == 1 else f"{command}-{i}"
            port = ingest_port if command == "ingest" else free_port()
            own = {
                "process": {
                    "SEGFLOW_PROCESS_METRICS_PORT": str(port),
                    "SEGFLOW_PROCESS_STATE_DIR": str(log_dir / f"faust-{i}"),
                },
                "sink": {"SEGFLOW_SINK_METRICS_PORT": str(port)},
                "ingest": {},
            }[command]
            comps[name] = Component(command, name, {**env, **own}, port, log_dir)
    try:
        for comp in comps.values():
            comp.wait_ready()
        per = 100
        bodies = templates(50, per, event_names(args.event_names))
        services = service_pids()
        print(f"pipeline ready (logs in {log_dir}); event size ~{len(bodies[0]) // per} B")

        def cpu_now() -> dict[str, float]:
            """CPU seconds so far: segflow's processes, the services, this load generator."""
            out = {n: sum(c.stat()[1] for c in comps.values() if c.command == n) for n in OWN}
            out.update({n: cpu_seconds(pid) for n, pid in services.items()})
            out["loadgen"] = time.process_time()
            return out

        warm = args.warmup_events // per * per
        if warm:
            took = asyncio.run(blast(ingest_port, bodies, warm // per, args.connections, "w"))
            wait_loaded(warehouse, warm, timeout=300)
            print(f"warm-up: {warm:,} events sent in {took:.1f}s and loaded (not measured)")
        requests = args.events // per
        total = requests * per
        cpu0 = cpu_now()
        started = time.perf_counter()
        accepted_s = asyncio.run(blast(ingest_port, bodies, requests, args.connections))
        print(f"edge accepted {total:,} events in {accepted_s:.1f}s ({total / accepted_s:,.0f}/s)")
        done = wait_loaded(warehouse, warm + total, timeout=900)
        cpu1 = cpu_now()
        sustained = total / (done - started)
        cpu_per_event = {n: (cpu1[n] - cpu0[n]) / total * 1e6 for n in cpu1}
        own = sum(cpu_per_event[n] for n in OWN)
        print(
            f"sustained: {total:,} events queryable after {done - started:.1f}s "
            f"= {sustained:,.0f} events/s"
        )
        print("CPU per event: " + ", ".join(f"{n} {us:.0f} us" for n, us in cpu_per_event.items()))
        print(f"segflow's own CPU per event (edge + processor + sink): {own:.0f} us")

        rate = args.rate if args.rate is not None else sustained / 2
        prober = Prober(warehouse)
        prober.start()
        sinks = [c for c in comps.values() if c.command == "sink"]
        flushes0 = sink_flushes(sinks)
        sent = asyncio.run(fixed_rate(ingest_port, bodies, rate, args.duration, prober, per))
        flushes1 = sink_flushes(sinks)
        everything = warm + total + sent + len(prober.sent)
        wait_loaded(warehouse, everything, timeout=300)
        time.sleep(1.0)
        prober.stop()
        fresh = prober.freshness()
        p50, p95 = pct(fresh, 0.5), pct(fresh, 0.95)
        loaded, distinct = exactly_once(warehouse)
        once = loaded == distinct == everything
        print(
            f"web.tracks: {loaded:,} rows, {distinct:,} distinct ids, "
            f"{everything:,} events accepted: "
            + ("each exactly once" if once else "NOT exactly once")
        )
        print(
            f"freshness at {rate:,.0f} events/s ({rate / sustained:.2f} of sustained): "
            f"{len(fresh)} probes, p50 {p50:.2f}s p95 {p95:.2f}s max {max(fresh):.2f}s"
        )
        print("  probes in the order sent (s): " + " ".join(f"{f:.1f}" for f in prober.in_order()))
        for line in flush_report(flushes0, flushes1):
            print(line)
        stats = {n: c.stat() for n, c in comps.items()}
        for n, (rss, cpu) in stats.items():
            print(f"  {n:<8} peak RSS {rss:6.0f} MB  CPU {cpu:7.1f} s")
        run = Run(
            sustained, total / accepted_s, rate, p50, p95, len(fresh), once, cpu_per_event, stats
        )
        if args.runs > 1:
            print("RUN " + result_line(args, run, [run]).removeprefix("RESULT "))
        return run
    finally:
        for comp in comps.values():
            comp.stop()
        drop_topics(kafka.bootstrap, [f"bench-e2e-{tag}"])


def write_results(args: argparse.Namespace, med: Run, runs: list[Run]) -> None:
    scaled = not args.workers == args.sinks == 1
    layout = f"-{args.workers}x{args.sinks}" if scaled else ""
    if args.event_names:
        layout += f"-{args.event_names}-events"
    several = len(runs) > 1
    own = statistics.median([r.own for r in runs])
    lines = [
        "# bench/e2e.py results",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
        "broker, emulator, edge, processor and sink on the same machine"
        + (f"; the medians of {len(runs)} runs, one after the other." if several else ".")
        + (
            f" Each run first sends {args.warmup_events:,} events and waits for them to load"
            " (the warm-up, not measured)."
            if args.warmup_events
            else " No warm-up (`--warmup-events 0`)."
        ),
        "",
        "Commands: `make services-start`, then "
        f"`PYTHONPATH=. .venv/bin/python bench/e2e.py --events {args.events} "
        + (f"--rate {args.rate:.0f} " if args.rate is not None else "")
        + (f"--workers {args.workers} --sinks {args.sinks} " if scaled else "")
        + (f"--event-names {args.event_names} " if args.event_names else "")
        + (f"--runs {len(runs)} " if several else "")
        + (f"--warmup-events {args.warmup_events} " if args.warmup_events != 10_000 else "")
        + f"--duration {args.duration:.0f} --partitions {args.partitions}`",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| sustained events/s, send to queryable ({args.events:,} events) | "
        f"{med.sustained:,.0f} |",
        f"| events/s accepted by the edge | {med.accepted:,.0f} |",
        f"| freshness p50 at {med.rate:,.0f} events/s ({med.probes} probes) | {med.p50:.2f} s |",
        f"| freshness p95 at {med.rate:,.0f} events/s | {med.p95:.2f} s |",
        f"| segflow's own CPU per event (edge + processor + sink), sustained phase | "
        f"{own:.0f} µs |",
        f"| exactly once | {'yes' if med.once else 'no'} |",
    ]
    for name, (rss, cpu) in med.stats.items():
        lines.append(f"| {name}: peak RSS / CPU seconds | {rss:.0f} MB / {cpu:.0f} s |")
    if several:
        lines += [
            "",
            "| run | events/s | own CPU µs per event | freshness p50 / p95 | exactly once |",
            "| --- | --- | --- | --- | --- |",
            *(
                f"| {i} | {r.sustained:,.0f} | {r.own:.0f} "
                f"({' + '.join(f'{r.cpu_per_event[n]:.0f}' for n in OWN)}) | "
                f"{r.p50:.2f} / {r.p95:.2f} s | {'yes' if r.once else 'no'} |"
                for i, r in enumerate(runs, 1)
            ),
        ]
    cpu_per_event = med.cpu_per_event
    total_us = sum(us for n, us in cpu_per_event.items() if n != "loadgen")
    lines += [
        "",
        "CPU time per event over the sustained phase, by process (what bounds throughput on this "
        "machine, the load generator aside: "
        f"{os.cpu_count()} cores / {total_us:.0f} us = at most "
        f"{(os.cpu_count() or 1) / total_us * 1e6:,.0f} events/s with every core busy):",
        "",
        "| process | CPU us per event |",
        "| --- | --- |",
        *(f"| {n} | {us:.0f} |" for n, us in sorted(cpu_per_event.items(), key=lambda x: -x[1])),
    ]
    out = ROOT / "bench" / "results" / f"e2e{layout}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
