"""`segflow process` with fewer stages, for `bench/processors.py --stages`: what the stages cost.

    PYTHONPATH=. python -m bench.stage_floor {dedupe|framework}

Runs the worker exactly as `segflow process` does (the same Faust app, consumer, transactional
hand-off, codec and settings) with `Pipeline.process` reduced to:

- framework: the clean record's annotations only (canonicalUserId = userId, nothing masked, no
  unmapped keys, processedAt): what the framework, the exactly-once hand-off and the codec cost
  per event with no stage at all;
- dedupe: the same plus the messageId dedupe and its changelog write: the cheapest stage that
  keeps state.

Benchmarks only: the records it writes are not masked, stitched or checked for drift. The
"no masking" variant needs no patch (a rules file without PII rules, detector or name screen,
written by bench/processors.py).
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

VARIANTS = ("dedupe", "framework")


def patch(variant: str) -> None:
    """Replace `Pipeline.process` by the `variant`'s reduced version."""
    if variant not in VARIANTS:
        raise SystemExit(f"stage_floor: unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
    from processors import pipeline

    dedupe = variant == "dedupe"

    def process(
        self: pipeline.Pipeline,
        raw: dict[str, Any],
        key: bytes | None,
        partition: int,
        now: datetime,
        writes: list[Any],
    ) -> pipeline.Outcome:
        call_type: str = raw["type"]
        if now is not self._now:
            self._now, self._clock, self._now_micros = now, now.timestamp(), pipeline.micros(now)
        if dedupe:
            message_id: str = raw["messageId"]
            if self.deduper.is_duplicate(partition, message_id, self._clock):
                return pipeline.Outcome(call_type, None, dropped=pipeline.DUPLICATE)
            self.deduper.remember(partition, message_id, self._clock, writes)
        raw["canonicalUserId"] = raw.get("userId")
        raw["maskedFields"] = []
        raw["piiKeyVersion"] = None
        raw["unmapped"] = "{}"
        raw["processedAt"] = self._now_micros
        return pipeline.Outcome(call_type, raw)

    pipeline.Pipeline.process = process  # type: ignore[method-assign]


def main() -> int:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    patch(sys.argv[1])
    from cli.main import main as segflow

    return segflow(["process"])


if __name__ == "__main__":
    sys.exit(main())
