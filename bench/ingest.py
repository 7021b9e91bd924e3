"""Benchmark of the ingest edge against the shared broker: throughput, latency, ceiling, RSS.

    PYTHONPATH=. python bench/ingest.py [--duration 20] [--connections 32] [--edges 1]
                                        [--rate 200] [--profile] [--keep-topics]

1. Hot path per event, in this process: decode + validate + normalize + encode of realistic
   events with the edge's fast path vs the pydantic models and fastavro (ratios, same run).
2. The ceiling: Kafka's own kafka-producer-perf-test (ProducerPerformance from the broker's jars
   in .cache/kafka/lib) with the same record size and producer settings (acks=all, idempotent,
   lz4, linger.ms, batch.size) on its own topic.
3. The edge as a subprocess (`segflow ingest`, one or --edges processes on their own ports) on a
   fresh topic prefix; an asyncio raw-socket HTTP/1.1 client with keep-alive connections posts
   /v1/batch requests of 100 events (1-2 KB each) back to back: events/s answered 200.
4. Single /v1/track calls at a fixed rate (open loop, latency from the scheduled send time):
   p50/p99.
5. Peak RSS (VmHWM) and CPU seconds of each edge process. With --profile the (single) edge runs
   under cProfile and the top functions by own time are printed.

Ends with `RESULT events_per_s=<n> ceiling_per_s=<n> ratio=<r> p50_ms=<x> p99_ms=<y>`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import pstats
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from bench import cpu_seconds, drop_topics, peak_rss_mb  # noqa: E402
from ingest.normalize import merge_defaults, to_raw_record  # noqa: E402
from ingest.rejections import ItemProblem  # noqa: E402
from ingest.validation import EventFields, fast_fields, model_fields  # noqa: E402
from runtime.services import kafka as kafka_service  # noqa: E402
from runtime.settings import KafkaSettings  # noqa: E402
from runtime.topic_admin import TopicSpec, create_topics, expected_topics  # noqa: E402
from schemas.avro_compiled import compile_writer  # noqa: E402
from schemas.codec import RAW_EVENT, AvroCodec  # noqa: E402

WRITE_KEY = "dev-write-key"
AUTH = "Basic ZGV2LXdyaXRlLWtleTo="  # base64("dev-write-key:")
PRODUCTS = ["Trail Shoe", "Rain Jacket", "Merino Socks", "Wool Hat", "Day Pack", "Water Bottle"]
EVENTS = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Searched"]


# ---------------------------------------------------------------------------- traffic


def realistic_event(
    rng: random.Random, now: datetime, events: Sequence[str] = EVENTS
) -> dict[str, Any]:
    """A 1-2 KB track call as analytics.js sends it (product list of varying length), its name
    one of `events`."""
    n_products = rng.randint(1, 5)
    user = rng.randint(1, 50_000)
    return {
        "type": "track",
        "event": rng.choice(events),
        "userId": f"user-{user}",
        "anonymousId": str(uuid.UUID(int=rng.getrandbits(128))),
        "messageId": f"ajs-next-{uuid.UUID(int=rng.getrandbits(128)).hex}",
        "timestamp": (now - timedelta(milliseconds=rng.randint(10, 900))).isoformat(),
        "properties": {
            "order_id": f"ord-{rng.getrandbits(40)}",
            "revenue": round(rng.uniform(5, 500), 2),
            "currency": "EUR",
            "coupon": rng.choice([None, "SPRING", "WELCOME10"]),
            "products": [
                {
                    "product_id": f"p-{rng.getrandbits(24)}",
                    "sku": f"SKU-{rng.getrandbits(20)}",
                    "name": rng.choice(PRODUCTS),
                    "price": round(rng.uniform(3, 150), 2),
                    "quantity": rng.randint(1, 3),
                    "category": "Outdoor",
                }
                for _ in range(n_products)
            ],
        },
        "context": {
            "ip": f"203.0.113.{rng.randint(1, 254)}",
            "library": {"name": "analytics.js", "version": "next-1.70.0"},
            "locale": rng.choice(["en-US", "de-DE", "fr-FR"]),
            "timezone": "Europe/Berlin",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Safari/537.36",
            "page": {
                "path": "/checkout",
                "referrer": "https://www.example.com/cart",
                "title": "Checkout - Example Shop",
                "url": f"https://shop.example.com/checkout?step={rng.randint(1, 3)}",
            },
            "campaign": {"name": "spring_sale", "source": "newsletter", "medium": "email"},
        },
        "integrations": {"All": True},
    }


def batch_bodies(n_bodies: int, per_batch: int, seed: int = 7) -> tuple[list[bytes], float]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    bodies, sizes = [], []
    for _ in range(n_bodies):
        events = [realistic_event(rng, now) for _ in range(per_batch)]
        sizes += [len(orjson.dumps(e)) for e in events]
        bodies.append(orjson.dumps({"batch": events, "sentAt": now.isoformat()}))
    return bodies, statistics.fmean(sizes)


# ---------------------------------------------------------------------------- 1. hot path


def hot_path(n: int = 20_000) -> tuple[float, float]:
    """Events/s of decode+validate+normalize+encode: edge path vs pydantic + fastavro."""
    codec = AvroCodec()
    write = compile_writer(codec.latest(RAW_EVENT))
    bodies, _ = batch_bodies(n // 100, 100, seed=11)
    now = datetime.now(UTC)

    def run(fast: bool) -> float:
        started = time.perf_counter()
        for body in bodies:
            for item in orjson.loads(body)["batch"]:
                merge_defaults(item, None, None)
                fields: EventFields | ItemProblem | None = fast_fields(item) if fast else None
                if fields is None:
                    fields = model_fields(item)
                assert isinstance(fields, EventFields)
                record = to_raw_record(item, fields, "web", now, now)
                write(record) if fast else codec.encode(RAW_EVENT, record)
        return n / (time.perf_counter() - started)

    run(True)
    return run(True), run(False)


# ---------------------------------------------------------------------------- 2. ceiling


def ceiling(
    kafka: KafkaSettings, topic: str, record_size: int, records: int, linger: float
) -> float:
    lib = ROOT / ".cache" / "kafka" / "lib"
    log4j = ROOT / "runtime" / "services" / "kafka-log4j2.properties"
    args = [
        "java", "-Xmx512m", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic", topic, "--num-records", str(records), "--record-size", str(record_size),
        "--throughput", "-1", "--producer-props", f"bootstrap.servers={kafka.bootstrap}",
        "acks=all", "enable.idempotence=true", "compression.type=lz4", f"linger.ms={int(linger)}",
        "batch.size=1000000", "max.in.flight.requests.per.connection=5",
    ]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, check=True).stdout
    final = [line for line in out.splitlines() if "records sent" in line][-1]
    match = re.search(r"records sent, ([\d.]+) records/sec", final)
    assert match, final
    print(f"  kafka-producer-perf-test: {final.strip()}")
    return float(match.group(1))


# ---------------------------------------------------------------------------- 3/4. HTTP load


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough parsing to read a status and a body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        line = await self.reader.readline()
        status = int(line[9:12])
        length = 0
        while True:
            header = await self.reader.readline()
            if header in (b"\r\n", b""):
                break
            if header[:15].lower() == b"content-length:":
                length = int(header[15:])
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def http_request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def throughput(
    ports: list[int],
    requests: list[bytes],
    connections: int,
    warmup: float,
    duration: float,
    per_request: int,
) -> tuple[float, dict[int, int]]:
    conns = [await Connection.open(ports[i % len(ports)]) for i in range(connections)]
    statuses: dict[int, int] = {}
    counting = False
    start = time.perf_counter()
    end = start + warmup + duration

    async def worker(conn: Connection, offset: int) -> None:
        i = offset
        while time.perf_counter() < end:
            status = await conn.request(requests[i % len(requests)])
            i += 1
            if counting:
                statuses[status] = statuses.get(status, 0) + 1

    tasks = [asyncio.create_task(worker(c, k * 7)) for k, c in enumerate(conns)]
    await asyncio.sleep(warmup)
    counting = True
    measured_from = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - measured_from
    for c in conns:
        c.close()
    return statuses.get(200, 0) * per_request / elapsed, statuses


async def latency(
    port: int, requests: list[bytes], rate: float, duration: float, connections: int = 32
) -> tuple[list[float], dict[int, int]]:
    """Open-loop: request i is due at t0 + i/rate; latency counts from when it was due."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    t0 = time.perf_counter() + 0.1
    total = int(rate * duration)

    async def one(i: int) -> None:
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        conn = await pool.get()
        status = await conn.request(requests[i % len(requests)])
        latencies.append(time.perf_counter() - due)
        statuses[status] = statuses.get(status, 0) + 1
        pool.put_nowait(conn)

    await asyncio.gather(*(one(i) for i in range(total)))
    while not pool.empty():
        pool.get_nowait().close()
    return latencies, statuses


# ---------------------------------------------------------------------------- edge process


class EdgeProcess:
    def __init__(
        self, kafka: KafkaSettings, port: int, profile: Path | None, linger: float
    ) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SEGFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "SEGFLOW_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "SEGFLOW_INGEST_HOST": "127.0.0.1",
            "SEGFLOW_INGEST_PORT": str(port),
            "SEGFLOW_INGEST_LINGER_MS": str(linger),
            "SEGFLOW_ALLOW_DEV_DEFAULTS": "true",  # the embedded rules' development key
            "SEGFLOW_LOG_LEVEL": "WARNING",
        }
        cmd = [sys.executable]
        if profile is not None:
            cmd += ["-m", "cProfile", "-o", str(profile)]
        cmd += ["-m", "cli.main", "ingest"]
        self.port = port
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the edge exited at start-up"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the edge did not become ready")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds per thread name (the event loop, the delivery thread, librdkafka's)."""
        out: dict[str, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = re.sub(r"\d+$", "", name.split("/")[0]) or name
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        return out

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def avro_size(bodies: list[bytes]) -> int:
    codec = AvroCodec()
    write = compile_writer(codec.latest(RAW_EVENT))
    now = datetime.now(UTC)
    sizes = []
    for item in orjson.loads(bodies[0])["batch"]:
        fields = fast_fields(item)
        assert fields is not None
        sizes.append(len(write(to_raw_record(item, fields, "web", now, now))))
    return int(statistics.fmean(sizes))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("SEGFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="measured seconds of /v1/batch load"
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--edges", type=int, default=1, help="edge processes (ports) sharing the load"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="/v1/track calls per second")
    parser.add_argument("--latency-duration", type=float, default=10.0)
    parser.add_argument("--linger-ms", type=float, default=5.0)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--ceiling-records", type=int, default=500_000)
    parser.add_argument("--profile", action="store_true", help="run the edge under cProfile")
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument(
        "--private-broker",
        action="store_true",
        help="start an own broker on free ports for the run (when the shared one is busy)",
    )
    args = parser.parse_args()  # fmt: skip

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    private: Path | None = None
    if args.private_broker:
        private = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
        port = free_port()
        kafka_service.start(var_dir=private, port=port, controller_port=free_port())
        args.bootstrap = f"127.0.0.1:{port}"
        print(f"private broker on {args.bootstrap}")
    try:
        return run(args)
    finally:
        if private is not None:
            kafka_service.stop(var_dir=private)
            shutil.rmtree(private, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    print("1. hot path per event (one core, in-process)")
    fast, slow = hot_path()
    print(f"  edge path (fast checks + compiled Avro writer): {fast:,.0f} events/s")
    print(f"  pydantic models + fastavro:                     {slow:,.0f} events/s")
    print(f"  ratio: {fast / slow:.2f}x")

    bodies, mean_json = batch_bodies(40, 100)
    record_size = avro_size(bodies)
    print(f"events: {mean_json:,.0f} B of JSON on average, {record_size} B as raw_event Avro")

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    kafka = KafkaSettings(bootstrap=args.bootstrap, topic_prefix=prefix)
    specs = expected_topics(kafka.topics, partitions=args.partitions)
    perf_topic = prefix + "bench.perf-test"
    specs.append(TopicSpec(perf_topic, args.partitions, {"retention.ms": "3600000"}))
    create_topics(kafka, specs)
    edges: list[EdgeProcess] = []
    profile = Path(tempfile.mkdtemp()) / "edge.prof" if args.profile else None
    try:
        print("2. ceiling: kafka-producer-perf-test, same record size and producer settings")
        ceiling_per_s = ceiling(
            kafka, perf_topic, record_size, args.ceiling_records, args.linger_ms
        )

        print(f"3. /v1/batch, 100 events a request, {args.connections} connections, "
              f"{args.edges} edge process(es)")  # fmt: skip
        for i in range(args.edges):
            edges.append(
                EdgeProcess(kafka, free_port(), profile if i == 0 else None, args.linger_ms)
            )
        for edge in edges:
            edge.wait_ready()
        requests = [http_request("/v1/batch", b) for b in bodies]
        cpu_before = [e.cpu_seconds() for e in edges]
        threads_before = edges[0].thread_cpu()
        t_before = time.perf_counter()
        events_per_s, statuses = asyncio.run(
            throughput([e.port for e in edges], requests, args.connections, args.warmup,
                       args.duration, 100)
        )  # fmt: skip
        wall = time.perf_counter() - t_before
        cpu = sum(e.cpu_seconds() for e in edges) - sum(cpu_before)
        threads = {k: v - threads_before.get(k, 0.0) for k, v in edges[0].thread_cpu().items()}
        print(f"  statuses: {statuses}")
        busiest = sorted(threads.items(), key=lambda kv: -kv[1])[:6]
        print(
            "  edge CPU by thread (share of one core): "
            + ", ".join(f"{k} {v / wall:.0%}" for k, v in busiest)
        )
        print(f"  accepted: {events_per_s:,.0f} events/s; edge CPU {cpu / wall:.0%} of one core "
              f"({cpu / wall / max(events_per_s, 1) * 1e6:.1f} µs of CPU per event)")  # fmt: skip

        print(f"4. single /v1/track at {args.rate:g}/s for {args.latency_duration:g} s")
        rng = random.Random(3)
        now = datetime.now(UTC)
        singles = [
            http_request("/v1/track", orjson.dumps(realistic_event(rng, now))) for _ in range(200)
        ]
        lat, lat_statuses = asyncio.run(
            latency(edges[0].port, singles, args.rate, args.latency_duration)
        )
        lat_ms = sorted(x * 1000 for x in lat)
        p50 = lat_ms[len(lat_ms) // 2]
        p99 = lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))]
        print(
            f"  statuses: {lat_statuses}; p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
            f"max {lat_ms[-1]:.2f} ms"
        )

        for edge in edges:
            print(f"5. edge pid {edge.proc.pid}: peak RSS {edge.peak_rss_mb():.0f} MB")
    finally:
        for edge in edges:
            edge.stop()
        if not args.keep_topics:
            drop_topics(kafka.bootstrap, [kafka.topic_prefix])
    if profile is not None and profile.exists():
        out = io.StringIO()
        stats = pstats.Stats(str(profile), stream=out)
        stats.sort_stats("tottime").print_stats(25)
        print("6. profile of the edge's event-loop thread (top 25 by own time)")
        print(out.getvalue())
    ratio = events_per_s / ceiling_per_s if ceiling_per_s else 0.0
    print(f"RESULT events_per_s={events_per_s:.0f} ceiling_per_s={ceiling_per_s:.0f} "
          f"ratio={ratio:.3f} p50_ms={p50:.2f} p99_ms={p99:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
