from __future__ import annotations

from datetime import UTC, datetime

import orjson

from reverse_etl.batches import ENVELOPE_BYTES, pack
from reverse_etl.calls import CallSpec, RowCall, build_call

SPEC = CallSpec("s", "identify", "user_id", "anonymous_id", "user_id")
NOW = datetime(2024, 5, 1, tzinfo=UTC)


def _calls(n: int, size: int = 10) -> list[RowCall]:
    return [build_call(SPEC, {"user_id": f"u{i}", "blob": "x" * size}, NOW) for i in range(n)]


def test_event_count_limit() -> None:
    packing = pack(_calls(25), max_events=10, max_bytes=500 * 1024, max_event_bytes=32 * 1024)
    assert [len(b.calls) for b in packing.batches] == [10, 10, 5]
    assert not packing.oversized


def test_byte_limit_counts_the_whole_body_exactly() -> None:
    calls = _calls(40, size=1000)
    limit = 8 * 1024
    packing = pack(calls, max_events=2500, max_bytes=limit, max_event_bytes=32 * 1024)
    assert sum(len(b.calls) for b in packing.batches) == 40
    for batch in packing.batches:
        body = batch.body("2024-05-01T00:00:00.000Z")
        assert len(body) == batch.size <= limit
        assert [e["userId"] for e in orjson.loads(body)["batch"]] == [c.key for c in batch.calls]
    # Each batch was full: the next event would not have fitted.
    first, second = packing.batches[0], packing.batches[1]
    assert first.size + 1 + len(second.encoded[0]) > limit


def test_oversized_events_are_set_aside_in_order() -> None:
    calls = _calls(3, size=10)
    big = build_call(SPEC, {"user_id": "big", "blob": "y" * 40_000}, NOW)
    packing = pack(
        [calls[0], big, *calls[1:]],
        max_events=2500,
        max_bytes=500 * 1024,
        max_event_bytes=32 * 1024,
    )
    assert [c.key for c in packing.oversized] == ["big"]
    assert [c.key for c in packing.batches[0].calls] == ["u0", "u1", "u2"]


def test_empty_input_makes_no_batch() -> None:
    assert pack([], max_events=1, max_bytes=ENVELOPE_BYTES + 10, max_event_bytes=1).batches == []
