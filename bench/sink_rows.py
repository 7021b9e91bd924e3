"""CPU per record of the Snowflake sink's own work, in process: intake and flush preparation.

    PYTHONPATH=. python bench/sink_rows.py [--events 20000] [--flush 5000] [--rounds 3]

No broker, no warehouse: the edge's realistic 1-2 KB events (`bench.pipeline.records`) run
through the processors' `Pipeline` and are encoded as clean_event records, as the worker writes
them. Each record is handed to the sink's `RecordIntake.handle` (decode, rows, buffering), then
every `--flush` records the buffered batch is prepared as a flush is without the warehouse:
deduplicated (`collapse`, `first_per_id`), planned against the layouts a first pass created
(`evolution.plan`, the steady state: every column exists) and staged to a Parquet file
(`Stager.write`). Prints µs per record of each step, best of --rounds, and ends with
`RESULT intake_us=<a> plan_us=<b> stage_us=<c> total_us=<d>`.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import TIMESTAMP_CREATE_TIME
from prometheus_client import CollectorRegistry

from bench.pipeline import pipeline, records
from runtime.rules import load_rules
from schemas.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec
from sinks.snowflake.batcher import Batcher
from sinks.snowflake.evolution import plan
from sinks.snowflake.intake import RecordIntake
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.progress import Progress
from sinks.snowflake.rows import TableRow, collapse, first_per_id
from sinks.snowflake.settings import SinkSettings
from sinks.snowflake.stager import Stager

TOPIC = "segment.clean.bench"
PARTITIONS = 4
GC_YOUNG_THRESHOLD = 50_000  # as the sink runs (sinks/snowflake/consumer.py)


class Record:
    """The part of a confluent_kafka.Message the intake reads."""

    __slots__ = ("_offset", "_partition", "_stamp", "_value")

    def __init__(self, partition: int, offset: int, value: bytes, stamp: int) -> None:
        self._partition, self._offset, self._value, self._stamp = partition, offset, value, stamp

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self._stamp


def clean_records(n: int, now: datetime) -> list[bytes]:
    """clean_event records as the processors write them, from the edge's realistic events."""
    codec = AvroCodec()
    pipe = pipeline()
    out = []
    for i, value in enumerate(records(n, now)):
        raw = codec.decode(RAW_EVENT, value, micros=True)
        result = pipe.process(raw, None, i % 12, now, [])
        if result.clean is not None:
            out.append(codec.encode(CLEAN_EVENT, result.clean))
    return out


def messages(values: list[bytes]) -> list[Record]:
    stamp = int(time.time() * 1000)
    return [Record(i % PARTITIONS, i // PARTITIONS, v, stamp) for i, v in enumerate(values)]


def intake() -> tuple[RecordIntake, Batcher]:
    settings = SinkSettings()
    batcher = Batcher(10**9, 10**12, 10**6, 10**12)
    for p in range(PARTITIONS):
        batcher.assign(TOPIC, p, -1)
    made = RecordIntake(
        settings, load_rules(None), batcher, Progress(), SinkMetrics(CollectorRegistry()), None
    )
    return made, batcher


def run(msgs: list[Record], flush: int, stage_dir: Path) -> dict[str, float]:
    """µs per record of each step over `msgs` (a fresh intake; layouts from a first plan)."""
    take, batcher = intake()
    known: dict[tuple[str, str], dict[str, str]] = {}
    stager = Stager(None, "_segflow", stage_dir=stage_dir)  # type: ignore[arg-type]
    spent = {"intake": 0.0, "dedupe": 0.0, "plan": 0.0, "stage": 0.0}
    clock = time.perf_counter
    staged = 0

    def flush_batch() -> None:
        nonlocal staged
        batch = batcher.take()
        if batch is None:
            return
        a = clock()
        rows: list[TableRow]
        rows, repeated = first_per_id(collapse(batch.rows))
        b = clock()
        if not known:  # the first flush creates every table: steady state after it
            known.update(plan(rows, {}).columns)
            b = clock()
        p = plan(rows, known)
        assert not p.has_ddl and not p.misfits
        c = clock()
        prepared = stager.write(p, repeated, 0)
        d = clock()
        staged += prepared.staged_rows
        prepared.discard()
        spent["dedupe"] += b - a
        spent["plan"] += c - b
        spent["stage"] += d - c

    handle = take.handle
    for i, msg in enumerate(msgs, 1):
        a = clock()
        handle(msg, a)  # type: ignore[arg-type]
        spent["intake"] += clock() - a
        if i % flush == 0:
            flush_batch()
    flush_batch()
    assert staged == len(msgs), staged
    return {k: v / len(msgs) * 1e6 for k, v in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--flush", type=int, default=5_000, help="records per flush")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of one more round to this file")
    args = parser.parse_args()
    now = datetime.now(UTC)
    values = clean_records(args.events, now)
    size = sum(map(len, values)) / len(values)
    print(f"{len(values)} clean_event records, {size:.0f} B of Avro on average")
    msgs = messages(values)
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            figures = run(msgs, args.flush, Path(tmp))
            for k, v in figures.items():
                best[k] = min(v, best.get(k, v))
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.runcall(run, msgs, args.flush, Path(tmp))
            profiler.dump_stats(args.profile)
    gc.set_threshold(young, older, oldest)
    total = sum(best.values())
    split = ", ".join(f"{k} {v:.1f} µs" for k, v in best.items())
    print(f"per record: {split}; total {total:.1f} µs")
    prep = best["dedupe"] + best["plan"]
    result: dict[str, Any] = {
        "intake_us": best["intake"],
        "plan_us": prep,
        "stage_us": best["stage"],
        "total_us": total,
    }
    print("RESULT " + " ".join(f"{k}={v:.1f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
