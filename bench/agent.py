"""CPU per event of the processors' agent over whole batches, in process, no broker.

    PYTHONPATH=. python bench/agent.py [--events 24000] [--batch 2000] [--repo PATH]

The records of `bench/processors.py` (its `make_records`, Avro-encoded) go through
`BatchAgent.process_batch` (decode, the pipeline, the records to send, metrics, the hand-off) into
the unit tests' fake transactional producer, and are acked as the agent acks them, in batches of
`--batch`. Prints the process CPU µs per event over every batch but the first two (warm-up).
`--repo` runs the agent of another tree (an export of an older commit: before and after in one
session); the records and the fakes come from that tree too. Ends with `RESULT
cpu_us_per_event=<x>`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=24_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--repo", type=Path, default=REPO, help="tree the agent runs from")
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))

    from faust.types import Message
    from prometheus_client import CollectorRegistry

    from bench.processors import make_records
    from schemas.codec import RAW_EVENT, AvroCodec
    from tests.unit.processors.fakes import FakeTransactionalProducer, install, processor

    codec = AvroCodec()
    records = make_records(args.events)
    values = [codec.encode(RAW_EVENT, r) for r in records]
    headers = [("segflow-source", b"web"), ("segflow-request-id", b"bench")]

    async def run() -> float:
        proc = processor(Path(tempfile.mkdtemp(prefix="segflow-bench-agent-")), CollectorRegistry())
        fake = FakeTransactionalProducer()
        install(proc, fake)
        app = proc.app
        topic = proc.topics.raw("track")
        app.topics.acks_enabled_for = lambda t: True  # type: ignore[assignment]
        from processors import faust_seam

        ack_all = getattr(faust_seam, "ack_all", None)  # older trees ack one by one
        spent, counted = 0.0, 0
        for n, start in enumerate(range(0, len(values), args.batch)):
            batch = [
                Message(
                    topic,
                    i % 2,
                    start + i,
                    0.0,
                    0,
                    headers,
                    (r.get("anonymousId") or "k").encode(),
                    v,
                    None,
                    generation_id=app.consumer_generation_id,
                )
                for i, (r, v) in enumerate(
                    zip(
                        records[start : start + args.batch],
                        values[start : start + args.batch],
                        strict=True,
                    )
                )
            ]
            fake.sent.clear()
            fake.headers.clear()
            began = time.process_time()
            await proc.agent.process_batch(batch)
            if ack_all is not None:
                ack_all(app.consumer, batch)
            else:
                for message in batch:
                    app.consumer.ack(message)
            if n >= 2:
                spent += time.process_time() - began
                counted += len(batch)
        return spent / max(counted, 1) * 1e6

    us = asyncio.run(run())
    print(f"agent from {args.repo}: {us:.1f} µs CPU per event")
    print(f"RESULT cpu_us_per_event={us:.1f}")


if __name__ == "__main__":
    main()
