"""Sound bounds of a JSON text, from one pass over its bytes: what the edge's fast paths check
before they accept an event or a request without walking it (ingest/limits.py: nesting, key
count and key length; ingest/validation.py: integers beyond 64 bits).

The pass runs in C (ingest/_jsonscan.c: ``scan(data)`` -> the "{" and "[" bytes, the ":"
bytes, whether a backslash occurs, the longest run of bytes without a quote, the longest run of
ASCII digits) when the extension is built (`make venv`); without it, each bound is worked out
with bytes methods at C speed, a pass each.
"""

from __future__ import annotations

from schemas.native import optional_extension

#: the one-pass scan in C, None when the extension was not built
_jsonscan = optional_extension("ingest._jsonscan")
NATIVE_AVAILABLE = _jsonscan is not None

#: digits of the shortest integer outside orjson's exact range (-9223372036854775809)
LONG_NUMBER_DIGITS = 19
# any byte -> "." except the quote; digits -> "0", any other byte -> "."
_STRINGS = bytes(34 if b == 34 else 46 for b in range(256))
_DIGITS = bytes(48 if 48 <= b <= 57 else 46 for b in range(256))
_LONG_NUMBER = b"0" * LONG_NUMBER_DIGITS


def shape_bounds(blob: bytes, max_run: int) -> tuple[int, int, bool, bool]:
    """(the "{" and "[" bytes, the ":" bytes, whether a backslash occurs, whether a run of more
    than `max_run` bytes holds no quote) of a JSON text."""
    if _jsonscan is not None:
        containers, colons, escaped, unquoted, _ = _jsonscan.scan(blob)
        return containers, colons, escaped, unquoted > max_run
    return (
        blob.count(b"{") + blob.count(b"["),
        blob.count(b":"),
        b"\\" in blob,
        len(blob) > max_run and b"." * (max_run + 1) in blob.translate(_STRINGS),
    )


def has_long_number(data: bytes) -> bool:
    """Whether `data` holds a run of LONG_NUMBER_DIGITS digits or more."""
    if _jsonscan is not None:
        longest: int = _jsonscan.scan(data)[4]
        return longest >= LONG_NUMBER_DIGITS
    return _LONG_NUMBER in data.translate(_DIGITS)
