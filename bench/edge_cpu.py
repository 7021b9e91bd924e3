"""The edge's own CPU per event, by thread, old tree against new tree, alternating.

    PYTHONPATH=. python bench/edge_cpu.py [--trees TREE [TREE ...]] [--pairs 3]
                                          [--events 200000] [--connections 16] [--profile]

For each round and each source tree (default: this one; e.g. ``--trees /tmp/old_edge .`` with
the old tree made by ``git archive <commit> | tar -x -C /tmp/old_edge``), one edge
(`segflow ingest` run from that tree) on a fresh topic prefix of the shared broker (12
partitions, as bench/e2e.py makes them) takes --events SDK-shaped 1-2 KB track events
(bench/ingest.py's realistic_event, unique messageIds), posted to /v1/batch 100 a request over
--connections keep-alive connections as fast as it answers, after a warm-up. The figure is
the edge process's CPU (user + system from /proc, every thread: the event loop, the delivery
thread, librdkafka's) divided by the events, from just before the first measured request until
the producer queue is empty; by thread group beside it. Trees alternate within each round, so
a neighbour's load on the shared machine falls on both alike: compare µs per event, not rates.
With --profile (one tree, one round) the edge runs under cProfile and the top functions by own
time are printed (cProfile inflates Python's share; the thread split is of that run). With
--py-spy PATH (a py-spy binary, not a dependency of segflow) the measured phase is sampled at
250 Hz into --py-spy-out as collapsed stacks (py-spy's raw format), which cost far less than
cProfile but still inflate the figures of that run.

Ends with one ``RESULT tree=<path> us_per_event=<median> runs=<a,b,c>`` line per tree.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import pstats
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import drop_topics  # noqa: E402
from bench.ingest import Connection, free_port, http_request, realistic_event  # noqa: E402
from runtime.settings import KafkaSettings  # noqa: E402
from runtime.topic_admin import create_topics, expected_topics  # noqa: E402

PLACEHOLDER = b"@@@@@@@@@@@@"  # replaced per request so every messageId is unique
PER_REQUEST = 100


def templates(n: int, seed: int = 7) -> list[bytes]:
    """Batch bodies whose messageIds hold PLACEHOLDER (as bench/e2e.py makes them)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for b in range(n):
        events = []
        for j in range(PER_REQUEST):
            event = realistic_event(rng, now)
            event["messageId"] = f"{PLACEHOLDER.decode()}-{b:03d}-{j:03d}"
            events.append(event)
        out.append(orjson.dumps({"batch": events, "sentAt": now.isoformat()}))
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread group (comm without digits: rdk:broker1 -> rdk:broker), and the
    process's system time alone under "(of which system)"."""
    out: dict[str, float] = {}
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    system = int(fields[12]) / os.sysconf("SC_CLK_TCK")
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if task.name == str(pid):
            name = "event-loop"
        name = re.sub(r"\d+$", "", name) or name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    out["(of which system)"] = system
    return out


def queue_depth(port: int) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(r"^segflow_ingest_producer_queue_messages (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def blast(port: int, bodies: list[bytes], first: int, requests: int, conns: int) -> int:
    """Post `requests` bodies (numbered from `first`); returns how many were not 200."""
    counter = iter(range(first, first + requests))
    refused = 0

    async def worker() -> None:
        nonlocal refused
        conn = await Connection.open(port)
        for i in counter:
            body = bodies[i % len(bodies)].replace(PLACEHOLDER, f"{i:012d}".encode())
            if await conn.request(http_request("/v1/batch", body)) != 200:
                refused += 1
        conn.close()

    await asyncio.gather(*(worker() for _ in range(conns)))
    return refused


def one_run(
    tree: Path, bodies: list[bytes], args: argparse.Namespace, profile: Path | None
) -> tuple[float, dict[str, float]]:
    """(µs of edge CPU per event, µs per event by thread group) of one edge from `tree`."""
    prefix = f"benchcpu{uuid.uuid4().hex[:8]}."
    kafka = KafkaSettings(bootstrap=args.bootstrap, topic_prefix=prefix)
    create_topics(kafka, expected_topics(kafka.topics, partitions=args.partitions))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "SEGFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "SEGFLOW_KAFKA_TOPIC_PREFIX": prefix,
        "SEGFLOW_INGEST_HOST": "127.0.0.1",
        "SEGFLOW_INGEST_PORT": str(port),
        "SEGFLOW_ALLOW_DEV_DEFAULTS": "true",
        "SEGFLOW_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += ["-m", "cli.main", "ingest"]
    proc = subprocess.Popen(cmd, env=env, cwd=tree)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the edge exited at start-up"
            try:
                queue_depth(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        warm = max(1, args.warmup // PER_REQUEST)
        asyncio.run(blast(port, bodies, 0, warm, args.connections))
        requests = args.events // PER_REQUEST
        before = thread_cpu(proc.pid)
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(
                [args.py_spy, "record", "--pid", str(proc.pid), "--rate", "250",
                 "--format", "raw", "--output", args.py_spy_out],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)
        refused = asyncio.run(blast(port, bodies, warm, requests, args.connections))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        while queue_depth(port) > 0:
            time.sleep(0.05)
        after = thread_cpu(proc.pid)
        if refused:
            print(f"  ({refused} requests answered non-200)")
        events = requests * PER_REQUEST
        by_thread = {k: (v - before.get(k, 0.0)) / events * 1e6 for k, v in after.items()}
        total = sum(v for k, v in by_thread.items() if not k.startswith("("))
        return total, by_thread
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        drop_topics(kafka.bootstrap, [prefix])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("SEGFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument("--trees", nargs="+", type=Path, default=[ROOT])
    parser.add_argument("--pairs", type=int, default=1, help="rounds over the trees")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--warmup", type=int, default=20_000, help="events before measuring")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--profile", action="store_true", help="cProfile the edge (one run)")
    parser.add_argument("--py-spy", help="path of a py-spy binary: sample the measured phase")
    parser.add_argument("--py-spy-out", default="edge.pyspy.txt", help="its collapsed stacks")
    args = parser.parse_args()

    bodies = templates(50)
    trees = [t.resolve() for t in args.trees]
    runs: dict[Path, list[float]] = {t: [] for t in trees}
    profile = Path(tempfile.mkdtemp()) / "edge.prof" if args.profile else None
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    for round_ in range(args.pairs):
        for tree in trees:
            total, by_thread = one_run(tree, bodies, args, profile)
            runs[tree].append(total)
            split = ", ".join(
                f"{k} {v:.1f}" for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1]) if v
            )
            print(f"round {round_ + 1} {tree}: {total:.1f} µs/event ({split})", flush=True)
    if profile is not None and profile.exists():
        out = io.StringIO()
        pstats.Stats(str(profile), stream=out).sort_stats("tottime").print_stats(40)
        print(out.getvalue())
    for tree, values in runs.items():
        print(
            f"RESULT tree={tree} us_per_event={statistics.median(values):.1f} "
            f"runs={','.join(f'{v:.1f}' for v in values)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
