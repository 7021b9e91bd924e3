from __future__ import annotations

from schemas.dlq import REASON_MAX_CHARS, DlqEntry, dlq_headers, parse_dlq_headers
from schemas.topics import (
    HEADER_ERROR,
    HEADER_ERROR_CODE,
    HEADER_ORIGIN_OFFSET,
    HEADER_ORIGIN_PARTITION,
    HEADER_ORIGIN_TOPIC,
    HEADER_SOURCE,
)


def test_headers_carry_reason_code_and_origin_after_the_records_own() -> None:
    headers = dlq_headers(
        "bad marker", "undecodable", "segment.raw.track", 3, 42, [(HEADER_SOURCE, b"web")]
    )
    assert headers == [
        (HEADER_SOURCE, b"web"),
        (HEADER_ERROR, b"bad marker"),
        (HEADER_ERROR_CODE, b"undecodable"),
        (HEADER_ORIGIN_TOPIC, b"segment.raw.track"),
        (HEADER_ORIGIN_PARTITION, b"3"),
        (HEADER_ORIGIN_OFFSET, b"42"),
    ]


def test_reason_is_cut_to_the_documented_length() -> None:
    headers = dict(dlq_headers("é" * (REASON_MAX_CHARS + 50), "x", "t", 0, 0))
    assert headers[HEADER_ERROR].decode() == "é" * REASON_MAX_CHARS


def test_origin_headers_in_any_client_shape() -> None:
    as_map = dlq_headers("r", "c", "t", 0, 1, {HEADER_SOURCE: b"web", "empty": None})
    as_pairs = dlq_headers("r", "c", "t", 0, 1, [(HEADER_SOURCE, b"web"), ("empty", None)])
    assert as_map == as_pairs
    assert as_map[:2] == [(HEADER_SOURCE, b"web"), ("empty", b"")]
    assert dlq_headers("r", "c", "t", 0, 1, None) == dlq_headers("r", "c", "t", 0, 1, [])


def test_a_record_dead_lettered_twice_carries_the_latest_entry_only() -> None:
    first = dlq_headers("old", "undecodable", "raw", 1, 5, [(HEADER_SOURCE, b"web")])
    second = dlq_headers("new", "too_large", "clean", 2, 9, first)
    names = [k for k, _ in second]
    assert len(names) == len(set(names))
    entry = parse_dlq_headers(second)
    assert entry == DlqEntry("new", "too_large", "clean", 2, 9, [(HEADER_SOURCE, b"web")])


def test_parse_round_trips_and_refuses_partial_or_garbled_headers() -> None:
    headers = dlq_headers("why", "code", "topic", 7, 8, [("a", b"1")])
    assert parse_dlq_headers(headers) == DlqEntry("why", "code", "topic", 7, 8, [("a", b"1")])
    assert parse_dlq_headers(None) is None
    assert parse_dlq_headers([(HEADER_SOURCE, b"web")]) is None
    assert parse_dlq_headers(headers[:-1]) is None
    garbled = [(k, b"x" if k == HEADER_ORIGIN_OFFSET else v) for k, v in headers]
    assert parse_dlq_headers(garbled) is None
