"""Bounded, partition-local key/value state whose every change becomes a changelog write.

The processors keep their state (seen messageIds, identity links) in memory, one ordered map per
Kafka partition, and persist it as a compacted changelog topic per table (Faust tables with a
memory store: on assignment the worker reads the changelog back). This module is the pure part:
it decides what to keep, what to evict, and which changelog records (key, value or tombstone)
must be written, into the same Kafka transaction as the output they belong to.

Bounds: at most ``max_entries`` per partition, and at most ``max_bytes`` of keys and values per
partition (a flood of long identifiers cannot grow it past that; Python's per-entry overhead
comes on top and is bounded by the entry limit). A write beyond either bound evicts the oldest
entries (by last write) and writes their tombstones. With a ``ttl_s`` entries older than it are
evicted as time passes. Evictions are counted by reason.

Undo: while a :class:`Journal` is attached (``state.journal = Journal()``), every change is
recorded, and :meth:`PartitionedState.rollback` undoes a partition's changes: the processors
use it when a batch's output is discarded (read in an older consumer generation), so the
records read again are not taken for duplicates of their own discarded processing.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

_TS = struct.Struct(">d")

Entry = tuple[float, bytes]


class ChangelogWrite(NamedTuple):
    """One record for a table's changelog: value None is a tombstone. (A named tuple: immutable
    like a frozen dataclass, and several times cheaper to build, once or more per event.)"""

    table: str
    partition: int
    key: bytes
    value: bytes | None


@dataclass(slots=True)
class Journal:
    """Changes since it was attached: (partition, key, entry before, removed from the head)."""

    changes: list[tuple[int, bytes, Entry | None, bool]] = field(default_factory=list)


def encode_entry(written_at: float, value: bytes) -> bytes:
    """Changelog value: the write time (for the ttl after a restart), then the value."""
    return _TS.pack(written_at) + value


def decode_entry(data: bytes) -> tuple[float, bytes]:
    if len(data) < _TS.size:
        raise ValueError("changelog entry shorter than its timestamp")
    return _TS.unpack_from(data)[0], data[_TS.size :]


def _size(key: bytes, value: bytes) -> int:
    return len(key) + len(value)


class PartitionedState:
    """key -> (written_at, value) per partition, bounded by count, bytes and optionally age."""

    def __init__(
        self,
        name: str,
        max_entries: int,
        ttl_s: float | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.name = name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._parts: dict[int, OrderedDict[bytes, Entry]] = {}
        self._bytes: dict[int, int] = {}
        self.evictions = {"max_entries": 0, "max_bytes": 0, "expired": 0}
        self.journal: Journal | None = None

    def _part(self, partition: int) -> OrderedDict[bytes, Entry]:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = OrderedDict()
            self._bytes[partition] = 0
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
        part = self._parts.get(partition)
        if part is None:
            part = self._part(partition)
        held = self._bytes
        before = part.get(key)
        if before is not None:
            part.move_to_end(key)
            held[partition] -= len(key) + len(before[1])
        if self.journal is not None:
            self.journal.changes.append((partition, key, before, False))
        part[key] = (now, value)
        held[partition] += len(key) + len(value)
        writes.append(ChangelogWrite(self.name, partition, key, encode_entry(now, value)))
        # the bounds are checked here first: in the steady state neither evicts anything
        ttl = self.ttl_s
        if ttl is not None and part[next(iter(part))][0] < now - ttl:
            self.expire(partition, now, writes)
        if len(part) > self.max_entries or (
            self.max_bytes is not None and held[partition] > self.max_bytes
        ):
            self._enforce(partition, writes)

    def _enforce(self, partition: int, writes: list[ChangelogWrite] | None) -> None:
        """Evict from the head until `partition` is within its bounds (tombstones to `writes`)."""
        part = self._parts[partition]
        while len(part) > self.max_entries or (
            self.max_bytes is not None and self._bytes[partition] > self.max_bytes and part
        ):
            reason = "max_entries" if len(part) > self.max_entries else "max_bytes"
            key = self._pop_head(partition, part)
            if writes is not None:
                self.evictions[reason] += 1
                writes.append(ChangelogWrite(self.name, partition, key, None))

    def _pop_head(self, partition: int, part: OrderedDict[bytes, Entry]) -> bytes:
        key, entry = part.popitem(last=False)
        self._bytes[partition] -= _size(key, entry[1])
        if self.journal is not None:
            self.journal.changes.append((partition, key, entry, True))
        return key

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
            self._pop_head(partition, part)
            writes.append(ChangelogWrite(self.name, partition, key, None))
            n += 1
        self.evictions["expired"] += n
        return n

    def rollback(self, partition: int, journal: Journal) -> int:
        """Undo the changes `journal` recorded for `partition`; returns how many were undone.

        Entries removed from the head (evicted, expired) go back to the head; an overwritten
        entry gets its value back (its place in the eviction order stays the newest)."""
        part = self._parts.get(partition)
        if part is None:
            return 0
        n = 0
        for p, key, before, from_head in reversed(journal.changes):
            if p != partition:
                continue
            n += 1
            now_held = part.pop(key, None)
            if now_held is not None:
                self._bytes[partition] -= _size(key, now_held[1])
            if before is None:
                continue
            part[key] = before
            self._bytes[partition] += _size(key, before[1])
            if from_head:
                part.move_to_end(key, last=False)
        return n

    def load(self, partition: int, items: Iterable[tuple[bytes, bytes]]) -> int:
        """Replace `partition` with entries read back from the changelog (encoded values).

        Entries are ordered by their write time; only the newest that fit the bounds are kept
        (the others were evicted before, their tombstones may not be compacted yet).
        """
        decoded = []
        for key, data in items:
            try:
                written_at, value = decode_entry(data)
            except ValueError:
                continue
            decoded.append((written_at, key, value))
        decoded.sort(key=lambda e: e[0])
        self._parts[partition] = OrderedDict((k, (t, v)) for t, k, v in decoded)
        self._bytes[partition] = sum(_size(k, v) for _, k, v in decoded)
        self._enforce(partition, None)
        return len(self._parts[partition])

    def load_one(self, partition: int, key: bytes, data: bytes) -> None:
        """Merge one entry read back from the changelog into a partition already held."""
        try:
            written_at, value = decode_entry(data)
        except ValueError:
            return
        part = self._part(partition)
        before = part.pop(key, None)
        if before is not None:
            self._bytes[partition] -= _size(key, before[1])
        part[key] = (written_at, value)
        self._bytes[partition] += _size(key, value)
        self._enforce(partition, None)

    def drop_partition(self, partition: int) -> None:
        self._parts.pop(partition, None)
        self._bytes.pop(partition, None)

    def partitions(self) -> list[int]:
        return list(self._parts)

    def nbytes(self) -> int:
        """Bytes of keys and values held, every partition."""
        return sum(self._bytes.values())

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts.values())
