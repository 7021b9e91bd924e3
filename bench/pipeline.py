"""CPU per event of the processors' stages, in process, on the edge's realistic 1-2 KB events.

    PYTHONPATH=. python bench/pipeline.py [--events 20000] [--rounds 3] [--corpus edge|worker]

No broker: the records the edge would write (`bench.ingest.realistic_event` through the edge's
own validation and normalisation, Avro-encoded) are decoded, run through `Pipeline.process` with
the embedded default rules (masking, the PII detector, stitching, drift, dedupe) and encoded as
clean_event records, as the worker does for each event. Prints µs per event for decode, process
and encode, best of --rounds, three ways in the same run: as shipped; with the masker's Python
walks of every value and key instead of the C screens (processors/_prescreen.c) under them
(`python_walks`); and with the detector's document prescreen off too (every value of every
root walked: the baseline of both optimisations). Ends with `RESULT process_us=<x>
python_walks_us=<w> walk_us=<y> ratio=<r>` (`ratio`: process_us / walk_us). `--corpus worker`
runs the records of `bench/processors.py` instead (tracks, pages and identifies with one
constant context, emails in properties, 2% duplicates): the stages as the worker benchmark
exercises them.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import realistic_event
from ingest.normalize import to_raw_record
from ingest.validation import fast_fields
from processors import masking
from processors.dedupe import Deduper
from processors.detector import may_hold_pii
from processors.drift import DriftDetector, KnownFields
from processors.masking import Masker
from processors.pipeline import Pipeline
from processors.stitching import IdentityGraph
from runtime.rules import load_rules
from schemas.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec


def records(n: int, now: datetime) -> list[bytes]:
    codec = AvroCodec()
    rng = random.Random(3)
    out = []
    for _ in range(n):
        item = realistic_event(rng, now)
        fields = fast_fields(item)
        assert fields is not None
        out.append(codec.encode(RAW_EVENT, to_raw_record(item, fields, "web", now, now)))
    return out


def worker_records(n: int) -> list[bytes]:
    """The records `bench/processors.py` writes (its `make_records`), Avro-encoded."""
    from bench.processors import make_records

    codec = AvroCodec()
    return [codec.encode(RAW_EVENT, r) for r in make_records(n)]


def pipeline() -> Pipeline:
    rules = load_rules(None)
    return Pipeline(
        Deduper(86_400, 10**7),
        Masker(rules.pii, b"bench-key-0123456789abcdef0123456789", "v1"),
        IdentityGraph(rules.identity, 10**7),
        DriftDetector(rules.tracking_plan, KnownFields(100_000)),
        rules.tracking_plan.mode,
    )


def run(values: list[bytes], now: datetime, native_walk: bool = True) -> dict[str, float]:
    """µs per event of each step, over `values` (a fresh pipeline: no duplicates)."""
    codec = AvroCodec()
    pipe = pipeline()
    pipe.masker.native_walk = native_walk
    spent = {"decode": 0.0, "process": 0.0, "encode": 0.0}
    clock = time.perf_counter
    for i, value in enumerate(values):
        a = clock()
        raw = codec.decode(RAW_EVENT, value, micros=True)
        b = clock()
        out = pipe.process(raw, None, i % 12, now, [])
        c = clock()
        if out.clean is not None:
            codec.encode(CLEAN_EVENT, out.clean)
        spent["decode"] += b - a
        spent["process"] += c - b
        spent["encode"] += clock() - c
    return {k: v / len(values) * 1e6 for k, v in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpus", choices=("edge", "worker"), default="edge")
    args = parser.parse_args()
    now = datetime.now(UTC)
    values = records(args.events, now) if args.corpus == "edge" else worker_records(args.events)
    size = sum(map(len, values)) / len(values)
    print(f"{len(values)} raw_event records ({args.corpus}), {size:.0f} B of Avro on average")
    screened = masking.document_may_hold_pii

    def walk_all(text: str, kinds: Any) -> bool:
        return may_hold_pii(text)  # the screen before: an @ or a run of 8+ digits -> walk

    best: dict[str, dict[str, float]] = {}
    ways = (
        ("shipped", screened, True),
        ("python_walks", screened, False),
        ("walk", walk_all, False),
    )
    for _ in range(args.rounds):  # interleaved, so all see the same machine
        for name, screen, native_walk in ways:
            masking.document_may_hold_pii = screen
            figures = run(values, now, native_walk)
            kept = best.get(name)
            if kept is None or figures["process"] < kept["process"]:
                best[name] = figures
    masking.document_may_hold_pii = screened
    for name, figures in best.items():
        split = ", ".join(f"{k} {v:.1f} µs" for k, v in figures.items())
        print(f"{name:<12}: {split} per event")
    process, walk = best["shipped"]["process"], best["walk"]["process"]
    python_walks = best["python_walks"]["process"]
    print(
        f"RESULT process_us={process:.1f} python_walks_us={python_walks:.1f} "
        f"walk_us={walk:.1f} ratio={process / walk:.2f}"
    )


if __name__ == "__main__":
    main()
