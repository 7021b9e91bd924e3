"""The backfill checkpoint: which archive files are finished, and how far unfinished ones got.

An append-only JSON-lines file; one line per step: ``{"file", "size", "lines", "done", "at"}``.
A line is written only after Kafka acknowledged every event before it, so a resumed backfill
starts each file after the last acknowledged line and skips finished files. The newest line of
a file wins; a torn last line (a crash while writing it) is ignored. A file whose size changed
since its line was written is read again from the start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import orjson


@dataclass(frozen=True)
class FileProgress:
    size: int
    lines: int
    done: bool


class Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, FileProgress] = {}
        self._out: IO[bytes] | None = None

    def load(self) -> Checkpoint:
        if not self.path.exists():
            return self
        with self.path.open("rb") as f:
            for line in f:
                try:
                    entry = orjson.loads(line)
                    progress = FileProgress(
                        int(entry["size"]), int(entry["lines"]), bool(entry["done"])
                    )
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a torn line from a crash while writing it
                self.entries[str(entry["file"])] = progress
        return self

    def start_line(self, rel_path: str, size: int) -> int | None:
        """The line to start `rel_path` at; None when the file is finished."""
        progress = self.entries.get(rel_path)
        if progress is None or progress.size != size:
            return 0
        return None if progress.done else progress.lines

    def record(self, rel_path: str, size: int, lines: int, done: bool) -> None:
        """Durably note that the first `lines` lines of the file are in Kafka."""
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("ab")
        entry = {
            "file": rel_path,
            "size": size,
            "lines": lines,
            "done": done,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._out.write(orjson.dumps(entry) + b"\n")
        self._out.flush()
        os.fsync(self._out.fileno())
        self.entries[rel_path] = FileProgress(size, lines, done)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
