"""What resolving identity chains adds to a flush, against the local emulator.

    PYTHONPATH=. python bench/identity_chains.py [--users 5000] [--devices 4] [--links 3000]
                                                 [--rounds 3]

1. loads an identity map through the sink's loader (in-process, the emulator's Snowflake-rules
   check off, as bench/sink.py): `--users` users, each with `--devices` anonymous ids;
2. then, `--rounds` times, one flush of `--links` new links: a third aliases of a known user to
   a new one (each re-points the user's rows: its devices and its own row), a third the new
   users' own rows, a third new devices identified as a user aliased on already (in the round
   before; the first round: in the same flush), stored to the final user;
3. the same flushes again into a second map with the chain step switched off;
4. prints, per flush, the whole flush's seconds and those of the chain step, and the RESULT
   line: the mean extra seconds per flush and the rows re-pointed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry  # noqa: E402

from runtime.services import emulator  # noqa: E402
from runtime.settings import WarehouseSettings  # noqa: E402
from sinks.snowflake.batcher import FlushBatch, PartitionSlice  # noqa: E402
from sinks.snowflake.loader import LoaderOptions, SnowflakeLoader  # noqa: E402
from sinks.snowflake.metrics import SinkMetrics  # noqa: E402
from sinks.snowflake.rows import Origin, TableRow, identity_row  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "bench.segment.identity"


class Feed:
    """Identity links as the processors publish them, flushed one batch at a time."""

    def __init__(self, loader: SnowflakeLoader) -> None:
        self.loader = loader
        self.offset = 0
        self.clock = 0  # seconds after T0 of the next link: later links are newer
        assert loader.ensure_offsets([(TOPIC, 0)]) == {(TOPIC, 0): -1}

    def row(self, i: int, identifier: str, kind: str, user: str) -> TableRow:
        self.clock += 1
        link = {
            "source": "web",
            "identifier": identifier,
            "identifierType": kind,
            "canonicalUserId": user,
            "messageId": f"m-{uuid.uuid4().hex}",
            "linkedAt": T0 + timedelta(seconds=self.clock),
        }
        return identity_row(link, Origin(TOPIC, 0, self.offset + i))

    def flush(self, links: list[tuple[str, str, str]]) -> float:
        rows = [self.row(i, *link) for i, link in enumerate(links)]
        n = len(rows)
        expected = self.offset if self.offset else -1
        batch = FlushBatch([PartitionSlice(TOPIC, 0, expected, self.offset + n, n)], rows, n, 0)
        started = time.perf_counter()
        self.loader.flush(batch)
        self.offset += n
        return time.perf_counter() - started


def loader_for(database: str) -> SnowflakeLoader:
    settings = WarehouseSettings(database=database, network_timeout_s=60, strict=False)
    return SnowflakeLoader(
        settings, LoaderOptions(group_id="bench"), SinkMetrics(CollectorRegistry())
    )


def run(args: argparse.Namespace, chains_on: bool) -> list[tuple[float, float, int]]:
    loader = loader_for(f"BENCH_CHAINS_{uuid.uuid4().hex[:8].upper()}")
    feed = Feed(loader)
    base: list[tuple[str, str, str]] = []
    for u in range(args.users):
        base += [(f"d{u}-{d}", "anonymous_id", f"u{u}") for d in range(args.devices)]
        base.append((f"u{u}", "user_id", f"u{u}"))
    for i in range(0, len(base), 20_000):
        feed.flush(base[i : i + 20_000])
    spent: list[float] = []
    moved: list[int] = []
    chain_run = loader.transaction.chains.run

    def timed(schema: str, links: Any, load_ts: str) -> int:
        started = time.perf_counter()
        n = chain_run(schema, links, load_ts) if chains_on else 0
        spent.append(time.perf_counter() - started)
        moved.append(n)
        return n

    loader.transaction.chains.run = timed  # type: ignore[method-assign,assignment]
    out = []
    third = args.links // 3
    for r in range(args.rounds):
        aliased = range(r * third, (r + 1) * third)
        links = [(f"u{u}", "previous_id", f"v{r}-{u}") for u in aliased]
        links += [(f"v{r}-{u}", "user_id", f"v{r}-{u}") for u in aliased]
        earlier = range((r - 1) * third, r * third) if r else aliased
        links += [(f"y{r}-{u}", "anonymous_id", f"u{u}") for u in earlier]
        seconds = feed.flush(links)
        out.append((seconds, spent[-1], moved[-1]))
    loader.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--links", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if not emulator.is_ready():
        print("the emulator is not running: segflow services start", file=sys.stderr)
        return 1
    with_chains = run(args, chains_on=True)
    without = run(args, chains_on=False)
    print(f"map: {args.users * (args.devices + 1)} rows; flushes of {args.links} links")
    print("round | flush s (chains) | chain step s | rows re-pointed | flush s (no chains)")
    for i, ((s, c, m), (s0, _, _)) in enumerate(zip(with_chains, without, strict=True)):
        print(f"{i + 1:5d} | {s:16.3f} | {c:12.3f} | {m:15d} | {s0:19.3f}")
    extra = statistics.mean(c for _, c, _ in with_chains)
    delta = statistics.mean(s for s, _, _ in with_chains) - statistics.mean(
        s for s, _, _ in without
    )
    print(
        f"RESULT chain step {extra:.3f} s per flush of {args.links} links "
        f"(flush time difference {delta:+.3f} s), "
        f"{statistics.mean(m for _, _, m in with_chains):.0f} rows re-pointed per flush"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
