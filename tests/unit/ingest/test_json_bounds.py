"""The edge's one-pass bounds of a JSON text: the C scan (ingest/_jsonscan.c) against the plain
definitions and against the bytes-method fallback, on any bytes; the fast paths that use them
are checked in test_limits.py and test_validation.py."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import json_bounds
from ingest.json_bounds import NATIVE_AVAILABLE, has_long_number, shape_bounds

JSONISH = st.lists(
    st.sampled_from([b"{", b"}", b"[", b"]", b":", b",", b'"', b"\\", b"0", b"9", b"12345", b"a"]),
    max_size=200,
).map(b"".join)


def definition(data: bytes) -> tuple[int, int, bool, int, int]:
    return (
        data.count(b"{") + data.count(b"["),
        data.count(b":"),
        b"\\" in data,
        max(map(len, data.split(b'"'))),
        max(map(len, re.findall(rb"[0-9]+", data)), default=0),
    )


def test_the_c_scan_is_built() -> None:
    assert NATIVE_AVAILABLE, "ingest/_jsonscan.c was not built: run make venv"


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=300), JSONISH), st.integers(0, 40))
def test_the_c_scan_and_the_fallback_give_the_definitions(data: bytes, max_run: int) -> None:
    c, colons, escaped, unquoted, digits = definition(data)
    assert json_bounds._jsonscan.scan(data) == (c, colons, escaped, unquoted, digits)
    expected = (c, colons, escaped, unquoted > max_run)
    assert shape_bounds(data, max_run) == expected
    assert has_long_number(data) == (digits >= 19)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(json_bounds, "_jsonscan", None)
        assert shape_bounds(data, max_run) == expected
        assert has_long_number(data) == (digits >= 19)


def test_the_c_scan_reads_any_buffer() -> None:
    doc = orjson.dumps({"user": {"id": 12345678901234567890, "tags": ["a", "b"]}, "k\\": 1})
    assert definition(doc)[4] == 20 and definition(doc)[2]
    scan = json_bounds._jsonscan.scan
    assert scan(bytearray(doc)) == scan(memoryview(doc)) == scan(doc) == definition(doc)
    with pytest.raises(TypeError):
        scan("text")
