"""Benchmark of the web console's cost to the edge: edge throughput with the console open vs
closed, in the same run.

    PYTHONPATH=. python bench/console.py [--phase 15] [--rounds 2] [--connections 32]

The edge (`segflow ingest`) runs as a subprocess on a fresh topic prefix, under bench/ingest.py's
load: keep-alive connections posting /v1/batch requests of 100 events back to back. The clean
topics the console reads are fed by this process at `--clean-rate` events/s in every phase, open
or closed (the processors, which would fill them in production, cannot keep pace with the edge on
a small machine, and their lag would make the console's intake vary from phase to phase).
Phases alternate, `--rounds` pairs in ABBA order (closed-open, open-closed, ...) so a drift of
the machine's load cancels out: closed (no console process) and open (`segflow console` running,
one browser-like client streaming /api/events/stream and polling /api/pipeline and /api/dlq
every 5 s, as the page does). Each phase measures events/s answered 200, and how many clean
events reached the clean topics (what the console had to read).

    PYTHONPATH=. python bench/console.py --phase 8 --rounds 4 --clean-rate 3000

Ends with `RESULT closed_per_s=<n> open_per_s=<n> console_ratio=<open/closed>` (means over the
phases) and the median of the per-pair ratios, plus the console's CPU share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from bench import cpu_seconds, drop_topics  # noqa: E402
from bench.ingest import EdgeProcess, batch_bodies, free_port, http_request, throughput  # noqa: E402
from runtime.settings import KafkaSettings  # noqa: E402
from runtime.topic_admin import create_topics, expected_topics  # noqa: E402
from schemas.codec import CLEAN_EVENT, AvroCodec  # noqa: E402


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url}: the process exited at start-up"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


class Browser:
    """What an open console page does: one SSE stream, and the visible view's polls."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.events = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._stream, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _stream(self) -> None:
        with urllib.request.urlopen(self.base + "/api/events/stream", timeout=30) as r:
            while not self._stop.is_set():
                line = r.readline()
                if not line:
                    return
                self.bytes += len(line)
                if line.startswith(b"data: "):
                    self.events += line.count(b'"seq":')

    def _poll(self) -> None:
        while not self._stop.wait(5.0):
            for path in ("/api/pipeline", "/api/dlq"):
                with urllib.request.urlopen(self.base + path, timeout=10) as r:
                    r.read()

    def close(self) -> None:
        self._stop.set()


def clean_offsets(kafka: KafkaSettings, partitions: int) -> int:
    """The sum of the clean topics' end offsets: how many clean records were written so far."""
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "bench-console-probe"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
            for t in kafka.topics.all_clean()
            for p in range(partitions)
        )
    finally:
        consumer.close()


class CleanFeeder:
    """Writes pre-encoded clean events to the clean topics at a fixed rate, in a thread."""

    def __init__(self, kafka: KafkaSettings, rate: float) -> None:
        codec = AvroCodec()
        now = datetime.now(UTC)
        self.values = [codec.encode(CLEAN_EVENT, clean_record(i, now)) for i in range(500)]
        self.topic = kafka.topics.clean("track")
        self.rate = rate
        self.sent = 0
        self._producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 20})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.sent < due:
                value = self.values[self.sent % len(self.values)]
                try:
                    self._producer.produce(self.topic, value, key=b"k%d" % (self.sent % 97))
                except BufferError:
                    self._producer.poll(0.05)
                    continue
                self.sent += 1
            self._producer.poll(0)
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._producer.flush(10)


def clean_record(i: int, now: datetime) -> dict[str, object]:
    """A clean track event of ~1 KB, as the processors write it."""
    props = {"product_id": f"p-{i % 50}", "price": 19.5 + i % 7, "list": ["a"] * 20}
    return {
        "type": "track",
        "messageId": f"bench-{i}-{uuid.uuid4().hex}",
        "source": "web",
        "anonymousId": str(uuid.uuid4()),
        "userId": f"user-{i}",
        "previousId": None,
        "groupId": None,
        "event": ("Product Viewed", "Product Added", "Order Completed")[i % 3],
        "name": None,
        "category": None,
        "receivedAt": now,
        "sentAt": now,
        "originalTimestamp": now,
        "timestamp": now,
        "properties": json.dumps(props),
        "traits": "{}",
        "context": json.dumps({"ip": "10.0.0.0", "library": {"name": "analytics.js"},
                               "userAgent": "Mozilla/5.0 " + "x" * 300}),
        "integrations": "{}",
        "channel": "client",
        "extra": "{}",
        "canonicalUserId": f"user-{i}",
        "maskedFields": ["context.ip:truncate"],
        "piiKeyVersion": "v1",
        "unmapped": "{}",
        "processedAt": now,
    }  # fmt: skip


def browse(base: str) -> int:
    """The browser process: stream and poll until SIGINT, then print the summaries received."""
    browser = Browser(base)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        browser.close()
    print(browser.events)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("SEGFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument("--phase", type=float, default=8.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=4, help="closed/open pairs (ABBA)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument(
        "--clean-rate", type=float, default=3000.0, help="clean events/s fed in every phase"
    )
    parser.add_argument("--browser", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.browser:
        return browse(args.browser)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")

    prefix = f"benchconsole{uuid.uuid4().hex[:8]}."
    kafka = KafkaSettings(bootstrap=args.bootstrap, topic_prefix=prefix)
    create_topics(kafka, expected_topics(kafka.topics, partitions=args.partitions))
    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    console_port = free_port()
    edge = EdgeProcess(kafka, free_port(), None, 5.0)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SEGFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "SEGFLOW_KAFKA_TOPIC_PREFIX": prefix,
        "SEGFLOW_LOG_LEVEL": "WARNING",
        "SEGFLOW_CONSOLE_PORT": str(console_port),
        "SEGFLOW_STATUS_EDGE_URL": f"http://127.0.0.1:{edge.port}",
        "SEGFLOW_STATUS_WAREHOUSE_CHECK": "false",
    }
    bodies, _ = batch_bodies(40, 100)
    requests = [http_request("/v1/batch", b) for b in bodies]
    rates: dict[str, list[float]] = {"closed": [], "open": []}
    console_cpu = console_wall = 0.0
    delivered = 0
    feeder = CleanFeeder(kafka, args.clean_rate)
    try:
        edge.wait_ready()
        for n in range(args.rounds):
            for arm in ("closed", "open") if n % 2 == 0 else ("open", "closed"):
                console = browser = None
                if arm == "open":
                    console = subprocess.Popen(
                        [sys.executable, "-m", "cli.main", "console"], env=env, cwd=ROOT,
                        stdout=subprocess.DEVNULL, stderr=(tmp / "console.log").open("ab"),
                    )  # fmt: skip
                    wait_http(f"http://127.0.0.1:{console_port}/healthz", console, 30)
                    time.sleep(2.0)  # the console's start-up (imports, first fetches) is over
                    # the browser is a process of its own: in this one it would take the GIL
                    # from the load generator and slow the edge's client, not the edge
                    browser = subprocess.Popen(
                        [sys.executable, __file__, "--browser", f"http://127.0.0.1:{console_port}"],
                        cwd=ROOT, stdout=subprocess.PIPE,
                    )  # fmt: skip
                cpu0, t0 = (cpu_seconds(console.pid) if console else 0.0), time.perf_counter()
                clean0 = clean_offsets(kafka, args.partitions)
                per_s, statuses = asyncio.run(
                    throughput([edge.port], requests, args.connections, args.warmup,
                               args.phase, 100)
                )  # fmt: skip
                clean = (clean_offsets(kafka, args.partitions) - clean0) / (
                    args.phase + args.warmup
                )
                if console is not None and browser is not None:
                    console_cpu += cpu_seconds(console.pid) - cpu0
                    console_wall += time.perf_counter() - t0
                    browser.send_signal(signal.SIGINT)
                    out, _ = browser.communicate(timeout=10)
                    delivered += int(out.decode().strip() or 0)
                    console.terminate()
                    console.wait(20)
                rates[arm].append(per_s)
                print(f"round {n + 1} console {arm:6}: {per_s:,.0f} events/s accepted, "
                      f"{clean:,.0f} clean events/s  {statuses}")  # fmt: skip
    finally:
        feeder.close()
        edge.stop()
        drop_topics(kafka.bootstrap, [prefix])
    closed = sum(rates["closed"]) / len(rates["closed"])
    opened = sum(rates["open"]) / len(rates["open"])
    print(f"console: {console_cpu / max(console_wall, 1e-9):.0%} of one core while open; "
          f"its stream delivered {delivered:,} event summaries")  # fmt: skip
    pairs = sorted(o / c for o, c in zip(rates["open"], rates["closed"], strict=True))
    print(f"per-pair open/closed ratios: {', '.join(f'{r:.3f}' for r in pairs)}; "
          f"median {statistics.median(pairs):.3f}")  # fmt: skip
    print(f"RESULT closed_per_s={closed:.0f} open_per_s={opened:.0f} "
          f"console_ratio={opened / closed:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
