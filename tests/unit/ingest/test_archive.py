from __future__ import annotations

import gzip
import io
from datetime import date
from pathlib import Path

import pytest

from ingest.archive import (
    LocalStore,
    classify_path,
    list_files,
    parse_day,
    parse_hour,
    read_lines,
)
from schemas.errors import ConfigError


def test_days_and_hours() -> None:
    assert parse_day("2024-05-01") == date(2024, 5, 1)
    assert parse_day("1714521600000") == date(2024, 5, 1)  # Segment: epoch ms of the day
    assert parse_day("2024-5-1") is None and parse_day("latest") is None
    assert parse_day("99999999999999999999") is None
    assert parse_hour("07") == 7 and parse_hour("23") == 23
    assert parse_hour("24") is None and parse_hour("x") is None


def test_layout_classification() -> None:
    f = classify_path("web/2024-05-01/07/1714548000000.abc.gz", 10)
    assert f is not None and (f.source_folder, f.day, f.hour) == ("web", date(2024, 5, 1), 7)
    seg = classify_path("Xy12Ab/1714521600000/1714548000000.e2e0ab06.gz", 3)
    assert seg is not None and seg.hour is None and seg.source_folder == "Xy12Ab"
    assert classify_path("web/2024-05-01/events.json", 1) is not None
    for bad in (
        "README",
        "web/file.gz",
        "web/not-a-day/file.gz",
        "web/2024-05-01/99/file.gz",
        ".hidden/2024-05-01/file.gz",
        "web/2024-05-01/file.parquet",
        "a/b/c/d/e.gz",
    ):
        assert classify_path(bad, 1) is None, bad


def test_listing_orders_by_source_day_hour(tmp_path: Path) -> None:
    for rel in (
        "web/2024-05-02/00/a.gz",
        "web/2024-05-01/13/b.json",
        "app/2024-05-03/c.gz",
        "web/notes.txt",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"{}\n")
    files, ignored = list_files(LocalStore(tmp_path))
    assert [f.rel_path for f in files] == [
        "app/2024-05-03/c.gz",
        "web/2024-05-01/13/b.json",
        "web/2024-05-02/00/a.gz",
    ]
    assert ignored == ["web/notes.txt"]
    with pytest.raises(ConfigError):
        LocalStore(tmp_path / "missing")


class Chunked(io.RawIOBase):
    """A stream that returns at most 3 bytes a read, like a network body."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = 3 if n < 0 else min(n, 3)
        out, self._data = self._data[:n], self._data[n:]
        return out


@pytest.mark.parametrize("compress", [False, True])
def test_lines_of_plain_and_gzip_whatever_the_name(compress: bool) -> None:
    data = b'{"a":1}\r\n{"b":2}\n\n{"c":3}'
    body = gzip.compress(data) if compress else data
    assert list(read_lines(Chunked(body))) == [b'{"a":1}', b'{"b":2}', b"", b'{"c":3}']
