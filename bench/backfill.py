"""Benchmark of `segflow backfill` against a baseline that only reads the archive.

    PYTHONPATH=. python bench/backfill.py [--events 200000] [--files 20]

1. writes a gzip archive in Segment's layout (web/<day>/<hour>/<file>.gz) of N realistic
   track/identify/page events;
2. baseline: read every file, gunzip and parse each line with orjson (the least any backfill
   must do), in this process;
3. `segflow backfill --dry-run` (read, validate, normalize, no Kafka) as a subprocess;
4. `segflow backfill` into raw topics with a unique prefix on the running broker (acks=all,
   idempotent, checkpoint every 20k events) as a subprocess;
and prints events/s of each, their ratios to the baseline, and each subprocess's peak RSS.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import drop_topics  # noqa: E402
from ingest.archive import LocalStore, list_files, read_lines  # noqa: E402
from runtime.settings import KafkaSettings  # noqa: E402
from runtime.topic_admin import create_topics, expected_topics  # noqa: E402


def make_archive(root: Path, events: int, files: int) -> None:
    rng = random.Random(7)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=files)
    per_file = events // files
    for f in range(files):
        hour = start + timedelta(hours=f)
        folder = root / "web" / hour.date().isoformat() / f"{hour.hour:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(per_file):
            t = (hour + timedelta(milliseconds=i * 10)).isoformat().replace("+00:00", "Z")
            user = f"user-{rng.randrange(5000)}"
            base = {
                "messageId": str(uuid.uuid4()),
                "anonymousId": f"anon-{rng.randrange(20000)}",
                "userId": user,
                "receivedAt": t,
                "timestamp": t,
                "sentAt": t,
                "context": {
                    "library": {"name": "analytics.js", "version": "2.11.1"},
                    "page": {"path": "/pricing", "url": "https://example.com/pricing"},
                    "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
                    "ip": "203.0.113.7",
                },
            }
            kind = rng.random()
            if kind < 0.7:
                base.update(
                    type="track",
                    event="Product Viewed",
                    properties={"sku": f"sku-{i % 300}", "price": 19.99, "n": i},
                )
            elif kind < 0.85:
                base.update(type="identify", traits={"email": f"{user}@example.com", "plan": "pro"})
            else:
                base.update(type="page", name="Pricing", properties={"path": "/pricing"})
            lines.append(orjson.dumps(base))
        (folder / f"{int(hour.timestamp() * 1000)}.{uuid.uuid4().hex[:8]}.gz").write_bytes(
            gzip.compress(b"\n".join(lines) + b"\n")
        )


def baseline(root: Path) -> tuple[int, float]:
    store = LocalStore(root)
    files, _ = list_files(store)
    started = time.perf_counter()
    n = 0
    for f in files:
        with store.open(f.rel_path) as stream:
            for line in read_lines(stream):
                if line:
                    orjson.loads(line)
                    n += 1
    return n, time.perf_counter() - started


_WRAPPER = (
    "import resource, sys\n"
    "from cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Seconds, peak RSS (KiB) and output of one `segflow` subprocess."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    seconds = time.perf_counter() - started
    out = proc.stdout.decode()
    if proc.returncode != 0:
        raise SystemExit(f"segflow {' '.join(args)} failed:\n{out}")
    rss = int(out.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return seconds, rss, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        make_archive(root, opts.events, opts.files)
        size = sum(p.stat().st_size for p in root.rglob("*.gz"))
        n, base_s = baseline(root)
        print(f"archive: {n} events in {opts.files} gzip files, {size / 1e6:.1f} MB")
        print(f"baseline  read+gunzip+parse: {n / base_s:>10,.0f} events/s  ({base_s:.2f}s)")

        prefix = f"bench.{uuid.uuid4().hex[:8]}."
        kafka = KafkaSettings(bootstrap=opts.bootstrap, topic_prefix=prefix)
        create_topics(kafka, expected_topics(kafka.topics, partitions=6))
        env = {
            "SEGFLOW_KAFKA_BOOTSTRAP": opts.bootstrap,
            "SEGFLOW_KAFKA_TOPIC_PREFIX": prefix,
            "SEGFLOW_LOG_FORMAT": "text",
            "SEGFLOW_LOG_LEVEL": "WARNING",
        }
        dry_s, dry_rss, _ = run_cli(["backfill", str(root), "--dry-run"], env)
        checkpoint = Path(tmp) / "cp.jsonl"
        real_s, real_rss, out = run_cli(
            ["backfill", str(root), "--backfill-checkpoint-path", str(checkpoint)], env
        )
        assert f"sent {n}" in out, out
        print(
            f"backfill --dry-run:          {n / dry_s:>10,.0f} events/s  ({dry_s:.2f}s, "
            f"{dry_s / base_s:.1f}x baseline time, peak RSS {dry_rss / 1024:.0f} MiB)"
        )
        print(
            f"backfill to Kafka:           {n / real_s:>10,.0f} events/s  ({real_s:.2f}s, "
            f"{real_s / base_s:.1f}x baseline time, peak RSS {real_rss / 1024:.0f}"
            " MiB, process start included)"
        )
        drop_topics(opts.bootstrap, [prefix])
        print(
            f"RESULT backfill_events_per_s={n / real_s:.0f} "
            f"ratio_to_read_only={base_s / real_s:.3f}"
        )


if __name__ == "__main__":
    main()
