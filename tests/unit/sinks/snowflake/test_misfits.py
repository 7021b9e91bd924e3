"""Pre-flight sizes and the splitting of a refused flush (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.snowflake_limits import MAX_VARCHAR_BYTES
from sinks.snowflake import misfits
from sinks.snowflake.batcher import FlushBatch, PartitionSlice
from sinks.snowflake.rows import Origin, event_rows

T = "segment.events.identify"


def record(n: int, **over: Any) -> dict[str, Any]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    rec = {
        "type": "identify",
        "messageId": f"m{n}",
        "source": "web",
        "anonymousId": "a",
        "userId": f"u{n}",
        "receivedAt": at,
        "timestamp": at,
        "traits": '{"plan": "pro"}',
        "context": "{}",
    }
    rec.update(over)
    return rec


def batch_of(offsets: list[int], partition: int = 0, expected: int = 5) -> FlushBatch:
    rows = []
    for off in offsets:
        rows += event_rows(record(off), Origin(T, partition, off), audit=True)
    new = offsets[-1] + 1
    return FlushBatch(
        [PartitionSlice(T, partition, expected, new, len(offsets))], rows, len(offsets), 900
    )


def test_rows_know_their_record_even_without_origin_columns() -> None:
    batch = batch_of([5, 6])
    groups = misfits.records_of(batch.rows)
    assert [origin for origin, _ in groups] == [(T, 0, 5), (T, 0, 6)]
    # identifies, users (no origin columns of its own) and audit_log rows of each record
    assert [[r.table for r in rows] for _, rows in groups] == [
        ["identifies", "users", "audit_log"],
        ["identifies", "users", "audit_log"],
    ]


def test_split_chains_the_offsets_and_keeps_every_row_once() -> None:
    batch = batch_of([5, 7, 8, 11])
    first, second = misfits.split(batch) or []
    assert first.moves() == [(T, 0, 5, 8)] and second.moves() == [(T, 0, 8, 12)]
    assert first.rows + second.rows == batch.rows
    assert first.records + second.records == batch.records
    a, b = misfits.split(first) or []
    assert a.moves() == [(T, 0, 5, 7)] and b.moves() == [(T, 0, 7, 8)]
    assert misfits.split(b) is None  # one record: the refused one
    assert misfits.refused_record(b) == (T, 0, 7)
    only = misfits.offsets_only(b)
    assert only.moves() == b.moves() and only.rows == []


def test_split_of_several_partitions_goes_between_partitions_first() -> None:
    one, two = batch_of([5, 6], 0), batch_of([3], 1, expected=-1)
    both = FlushBatch(one.slices + two.slices, one.rows + two.rows, 3, 300)
    first, second = misfits.split(both) or []
    assert first.moves() == one.moves() and second.moves() == two.moves()
    assert first.rows == one.rows and second.rows == two.rows


def test_oversized_record_is_found_and_small_ones_are_free() -> None:
    small = event_rows(record(1), Origin(T, 0, 1), audit=True)
    assert misfits.oversized(small, 2_000) is None
    big_value = "x" * (MAX_VARCHAR_BYTES + 1)
    rows = event_rows(record(1, traits=f'{{"essay": "{big_value}"}}'), Origin(T, 0, 1), audit=False)
    reason = misfits.oversized(rows, MAX_VARCHAR_BYTES + 100)
    assert reason is not None and "essay" in reason and big_value[:20] not in reason
    # the cheap bound: a small record is never checked in detail
    assert misfits.oversized(rows, 100) is None


@pytest.mark.parametrize("size", [MAX_VARCHAR_BYTES // 2 + 1])
def test_unmapped_document_over_the_limit_is_oversized(size: int) -> None:
    rows = event_rows(
        record(1, unmapped=f'{{"a": "{"y" * size}", "b": "{"z" * size}"}}'),
        Origin(T, 0, 1),
        audit=False,
    )
    assert misfits.oversized(rows, 2 * size + 100) is not None
