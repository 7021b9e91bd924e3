"""Segment's archive layout, in a local folder or an S3 bucket: finding and reading its files.

Segment's S3 destination writes newline-delimited JSON, gzipped, one folder per source and one
per day (``<source>/<day>/<file>.gz``, the day as epoch milliseconds); exports and copies often
use ISO days and an hour level. Both are read:

    <root>/<source>/<day>/[<hour>/]<file>

where ``<day>`` is ``YYYY-MM-DD`` or epoch milliseconds at midnight UTC, ``<hour>`` is 0-23,
and a file is gzip (detected by its magic bytes, whatever its name) or plain NDJSON. Files
elsewhere in the tree, and hidden files, are ignored and counted.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from schemas.errors import ConfigError, RetryableError

GZIP_MAGIC = b"\x1f\x8b"
_DATA_SUFFIXES = (".gz", ".json", ".jsonl", ".ndjson", ".txt", ".log")


@dataclass(frozen=True, order=True)
class ArchiveFile:
    """One data file of the archive (ordering: by source, day, hour, name)."""

    source_folder: str
    day: date
    hour: int | None
    rel_path: str
    size: int


def parse_day(text: str) -> date | None:
    """``YYYY-MM-DD`` or epoch milliseconds (Segment's folder names); None otherwise."""
    if text.isdigit() and len(text) >= 12:
        try:
            return datetime.fromtimestamp(int(text) / 1000, UTC).date()
        except (OverflowError, ValueError, OSError):
            return None
    try:
        return date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


def parse_hour(text: str) -> int | None:
    if text.isdigit() and len(text) <= 2 and 0 <= int(text) <= 23:
        return int(text)
    return None


def classify_path(rel_path: str, size: int) -> ArchiveFile | None:
    """The archive file at `rel_path` (relative, '/'-separated), or None when it is not one."""
    parts = [p for p in rel_path.split("/") if p]
    if len(parts) not in (3, 4) or any(p.startswith(".") for p in parts):
        return None
    name = parts[-1]
    if not name.lower().endswith(_DATA_SUFFIXES) and "." in name:
        return None
    day = parse_day(parts[1])
    if day is None:
        return None
    hour = None
    if len(parts) == 4:
        hour = parse_hour(parts[2])
        if hour is None:
            return None
    return ArchiveFile(parts[0], day, hour, "/".join(parts), size)


class ArchiveStore(Protocol):
    """Where an archive lives."""

    def describe(self) -> str: ...

    def walk(self) -> Iterator[tuple[str, int]]:
        """(relative path, size) of every object under the root."""
        ...

    def open(self, rel_path: str) -> IO[bytes]: ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise ConfigError(f"archive folder {root} does not exist")
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def walk(self) -> Iterator[tuple[str, int]]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file():
                yield path.relative_to(self.root).as_posix(), path.stat().st_size

    def open(self, rel_path: str) -> IO[bytes]:
        return (self.root / rel_path).open("rb")


class S3Store:
    """An ``s3://bucket/prefix`` through boto3 (any S3-compatible endpoint)."""

    def __init__(self, url: str, client: Any) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError(f"{url} names no bucket (s3://bucket/prefix)")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = client

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def walk(self) -> Iterator[tuple[str, int]]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix) :], int(obj["Size"])
        except Exception as exc:  # botocore raises many types; all mean "cannot list"
            raise RetryableError(f"listing {self.describe()}: {exc}") from exc

    def open(self, rel_path: str) -> IO[bytes]:
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self.prefix + rel_path)
        except Exception as exc:
            raise RetryableError(f"reading {self.describe()}{rel_path}: {exc}") from exc
        body: IO[bytes] = answer["Body"]
        return body


def open_store(
    location: str, *, s3_endpoint_url: str | None = None, s3_region: str | None = None
) -> ArchiveStore:
    """A LocalStore for a folder, an S3Store for s3://bucket/prefix."""
    if location.startswith("s3://"):
        import boto3  # only when reading S3

        client = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name=s3_region)
        return S3Store(location, client)
    return LocalStore(Path(location))


def list_files(store: ArchiveStore) -> tuple[list[ArchiveFile], list[str]]:
    """Archive files in order, and the paths that are not archive files."""
    files: list[ArchiveFile] = []
    ignored: list[str] = []
    for rel_path, size in store.walk():
        found = classify_path(rel_path, size)
        if found is None:
            ignored.append(rel_path)
        else:
            files.append(found)
    files.sort()
    return files, ignored


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Prefixed(io.RawIOBase):
    """A read-only stream that yields `head` and then the rest of `stream`."""

    def __init__(self, head: bytes, stream: Readable) -> None:
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)


def read_lines(stream: Readable) -> Iterator[bytes]:
    """The lines of a gzip or plain stream (decompressed on the fly), without line ends."""
    head = stream.read(2)
    buffered = io.BufferedReader(_Prefixed(head, stream), buffer_size=1 << 20)
    source: Iterable[bytes] = gzip.GzipFile(fileobj=buffered) if head == GZIP_MAGIC else buffered
    for line in source:
        yield line.rstrip(b"\r\n")
