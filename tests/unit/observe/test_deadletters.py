"""DLQ depth, reasons read from the headers only, and the tail reader against a spec'd consumer."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from unittest.mock import MagicMock

from confluent_kafka import Consumer, KafkaError

from observe.deadletters import (
    DlqReason,
    DlqStatus,
    depth_by_partition,
    newest_first,
    read_tail_headers,
    reason_of,
)
from schemas.dlq import dlq_headers


def test_depth_is_end_minus_start_per_partition_summed() -> None:
    depths = depth_by_partition({0: 3, 1: 0, 2: 9}, {0: 10, 1: 0, 2: 8})
    assert depths == {0: 7, 1: 0, 2: 0}
    assert DlqStatus("dlq", depths).depth == 7


def test_a_reason_comes_from_the_headers_on_one_short_line() -> None:
    headers = dlq_headers("bad\nthing " + "x" * 400, "codec", "segment.raw.track", 2, 41)
    r = reason_of(headers, 1, 7, 1_700_000_000_000)
    assert (r.code, r.origin_topic, r.origin_partition, r.origin_offset) == (
        "codec",
        "segment.raw.track",
        2,
        41,
    )
    assert "\n" not in r.reason and len(r.reason) == 200 and r.reason.endswith("…")
    assert r.at == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert r.to_dict()["origin"] == "segment.raw.track[2]@41"


def test_a_record_without_dlq_headers_is_reported_without_its_content() -> None:
    r = reason_of([("segflow-source", b"web")], 0, 3, None)
    assert (r.code, r.reason, r.at, r.origin_topic) == (
        "unknown",
        "no DLQ headers on this record",
        None,
        None,
    )


def _reason(partition: int, offset: int, second: int | None) -> DlqReason:
    at = None if second is None else datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)
    return DlqReason(partition, offset, at, "c", "r", None, None, None)


def test_newest_first_orders_by_time_and_keeps_the_limit() -> None:
    reasons = [_reason(0, 1, 5), _reason(1, 9, 30), _reason(0, 2, None), _reason(2, 4, 20)]
    newest = newest_first(reasons, 2)
    assert [(r.partition, r.offset) for r in newest] == [(1, 9), (2, 4)]
    assert DlqStatus("dlq", {0: 1}, newest).newest_at == datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)


def _message(partition: int, offset: int, headers: object = None, eof: bool = False) -> MagicMock:
    msg = MagicMock()
    err = MagicMock()
    err.code.return_value = KafkaError._PARTITION_EOF
    msg.error.return_value = err if eof else None
    msg.partition.return_value = partition
    msg.offset.return_value = offset
    msg.timestamp.return_value = (1, 1_700_000_000_000 + offset)
    msg.headers.return_value = headers
    msg.value.side_effect = AssertionError("the payload is never read")
    return msg


def test_the_tail_reader_starts_n_before_the_end_and_stops_at_each_end() -> None:
    consumer = MagicMock(spec_set=Consumer)
    h = dlq_headers("why", "code", "t", 0, 1)
    consumer.poll.side_effect = [
        _message(0, 8, h),
        None,
        _message(0, 9, h),
        _message(2, 5, eof=True),  # partition 2 ended before reaching its target: done too
    ]
    found = read_tail_headers(
        consumer, "dlq", {0: 0, 1: 4, 2: 3}, {0: 10, 1: 4, 2: 6}, 2, time.monotonic() + 5
    )
    assigned = consumer.assign.call_args.args[0]
    assert [(tp.partition, tp.offset) for tp in assigned] == [(0, 8), (2, 4)]  # 1 is empty
    assert [(r.partition, r.offset, r.reason) for r in found] == [(0, 8, "why"), (0, 9, "why")]
    consumer.commit.assert_not_called()


def test_the_tail_reader_gives_up_at_its_deadline() -> None:
    consumer = MagicMock(spec_set=Consumer)
    consumer.poll.return_value = None
    started = time.monotonic()
    assert read_tail_headers(consumer, "dlq", {0: 0}, {0: 3}, 5, started + 0.3) == []
    assert time.monotonic() - started < 2
