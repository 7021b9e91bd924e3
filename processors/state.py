"""Bounded, partition-local key/value state whose every change becomes a changelog write.

The processors keep their state (seen messageIds, identity links) in memory, one ordered map per
Kafka partition, and persist it as a compacted changelog topic per table (Faust tables with a
memory store: on assignment the worker reads the changelog back). This module is the pure part:
it decides what to keep, what to evict, and which changelog records (key, value or tombstone)
must be written, into the same Kafka transaction as the output they belong to.

Bounds: at most ``max_entries`` per partition; a write beyond it evicts the oldest entry (by
last write) and writes its tombstone. With a ``ttl_s``
entries older than it are evicted as time passes. Evictions are counted by reason.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

_TS = struct.Struct(">d")


@dataclass(frozen=True, slots=True)
class ChangelogWrite:
    """One record for a table's changelog: value None is a tombstone."""

    table: str
    partition: int
    key: bytes
    value: bytes | None


def encode_entry(written_at: float, value: bytes) -> bytes:
    """Changelog value: the write time (for the ttl after a restart), then the value."""
    return _TS.pack(written_at) + value


def decode_entry(data: bytes) -> tuple[float, bytes]:
    if len(data) < _TS.size:
        raise ValueError("changelog entry shorter than its timestamp")
    return _TS.unpack_from(data)[0], data[_TS.size :]


class PartitionedState:
    """key -> (written_at, value) per partition, bounded by count and optionally by age."""

    def __init__(
        self,
        name: str,
        max_entries: int,
        ttl_s: float | None = None,
    ) -> None:
        self.name = name
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._parts: dict[int, OrderedDict[bytes, tuple[float, bytes]]] = {}
        self.evictions = {"max_entries": 0, "expired": 0}

    def _part(self, partition: int) -> OrderedDict[bytes, tuple[float, bytes]]:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = OrderedDict()
        return part

    def get(self, partition: int, key: bytes, now: float | None = None) -> bytes | None:
        """The value of `key` in `partition`, None when absent (or older than the ttl)."""
        part = self._parts.get(partition)
        if part is None:
            return None
        entry = part.get(key)
        if entry is None:
            return None
        if self.ttl_s is not None and now is not None and now - entry[0] > self.ttl_s:
            return None
        return entry[1]

    def put(
        self, partition: int, key: bytes, value: bytes, now: float, writes: list[ChangelogWrite]
    ) -> None:
        """Set `key`, evicting what the bounds require; appends the changelog writes."""
        part = self._part(partition)
        if key in part:
            part.move_to_end(key)
        part[key] = (now, value)
        writes.append(ChangelogWrite(self.name, partition, key, encode_entry(now, value)))
        self.expire(partition, now, writes)
        while len(part) > self.max_entries:
            old, _ = part.popitem(last=False)
            self.evictions["max_entries"] += 1
            writes.append(ChangelogWrite(self.name, partition, old, None))

    def expire(self, partition: int, now: float, writes: list[ChangelogWrite]) -> int:
        """Evict entries older than the ttl from the head of `partition`; returns how many."""
        if self.ttl_s is None:
            return 0
        part = self._parts.get(partition)
        if not part:
            return 0
        cutoff = now - self.ttl_s
        n = 0
        while part:
            key, (written_at, _) = next(iter(part.items()))
            if written_at >= cutoff:
                break
            del part[key]
            writes.append(ChangelogWrite(self.name, partition, key, None))
            n += 1
        self.evictions["expired"] += n
        return n

    def load(self, partition: int, items: list[tuple[bytes, bytes]]) -> int:
        """Replace `partition` with entries read back from the changelog (encoded values).

        Entries are ordered by their write time; only the newest ``max_entries`` are kept (the
        others were evicted before, their tombstones may not be compacted yet).
        """
        decoded = []
        for key, data in items:
            try:
                written_at, value = decode_entry(data)
            except ValueError:
                continue
            decoded.append((written_at, key, value))
        decoded.sort(key=lambda e: e[0])
        decoded = decoded[-self.max_entries :]
        self._parts[partition] = OrderedDict((k, (t, v)) for t, k, v in decoded)
        return len(decoded)

    def load_one(self, partition: int, key: bytes, data: bytes) -> None:
        """Merge one entry read back from the changelog into a partition already held."""
        try:
            written_at, value = decode_entry(data)
        except ValueError:
            return
        part = self._part(partition)
        if key in part:
            part.move_to_end(key)
        part[key] = (written_at, value)
        while len(part) > self.max_entries:
            part.popitem(last=False)

    def drop_partition(self, partition: int) -> None:
        self._parts.pop(partition, None)

    def partitions(self) -> list[int]:
        return list(self._parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts.values())
