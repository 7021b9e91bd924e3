"""Per-partition buffers and the flush triggers. Pure: no Kafka, no warehouse, no clock reads.

Each owned partition has a buffer that knows the offset the warehouse holds for it (`base`: the
expected value of the compare-and-set) and the next offset after what it buffered. A flush takes
every buffer that moved and starts new ones where the taken ones end.

While a flush is in the warehouse, the next one can be prepared ahead from a snapshot of the
buffers (`peek`) as buffering goes on; `take_snapshot` later takes exactly what the snapshot
saw, if the buffers it saw are still the same ones (no drop, re-seek or take in between).

Forgotten users: a `forget` can be published after a record was decoded (and let through) and
before its flush commits. With a `suppressed` provider (the suppression reader's current set of
identifiers), every batch is filtered as it is taken (`drop_suppressed`): rows of suppressed
users go, their records' offsets still move (consumed, not loaded). A batch prepared ahead was
filtered when it was prepared; if the set changed since, it is filtered again when taken and its
preparation discarded when that dropped rows.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Protocol

from schemas.topics import PartitionKey
from sinks.snowflake.rows import TableRow
from sinks.snowflake.tables import IDENTITY_MAP, USERS


@dataclass
class PartitionBuffer:
    topic: str
    partition: int
    base: int
    """The next offset stored in the warehouse when this buffer began (-1: none yet)."""
    next_offset: int | None = None
    rows: list[TableRow] = field(default_factory=list)
    records: int = 0
    bytes: int = 0
    opened_at: float | None = None

    @property
    def moved(self) -> bool:
        return self.next_offset is not None


@dataclass(frozen=True)
class PartitionSlice:
    """One partition's part of a flush: offsets move from `expected` to `new`."""

    topic: str
    partition: int
    expected: int
    new: int
    records: int


class Prepared(Protocol):
    """The loader's work on a batch done ahead of its flush (a staged file, a plan)."""

    def discard(self) -> None: ...


@dataclass
class FlushBatch:
    slices: list[PartitionSlice]
    rows: list[TableRow]
    records: int
    bytes: int
    prepared: Prepared | None = None
    """Set when the batch was prepared ahead (the loader checks it still holds)."""
    suppressed: dict[str, int] = field(default_factory=dict)
    """Records per topic whose rows were dropped because their user is suppressed."""
    filtered_with: AbstractSet[str] | None = None
    """The suppression set the rows were last filtered with."""

    def discard_prepared(self) -> None:
        if self.prepared is not None:
            self.prepared.discard()
            self.prepared = None

    def moves(self) -> list[tuple[str, int, int, int]]:
        return [(s.topic, s.partition, s.expected, s.new) for s in self.slices]

    def without(self, lost: set[PartitionKey]) -> FlushBatch:
        """The batch minus partitions this instance no longer owns."""
        keep = [s for s in self.slices if (s.topic, s.partition) not in lost]
        if len(keep) == len(self.slices):
            return self
        self.discard_prepared()
        rows = [
            r
            for r in self.rows
            if (r.values.get("_segflow_topic"), r.values.get("_segflow_partition")) not in lost
        ]
        return FlushBatch(
            keep,
            rows,
            sum(s.records for s in keep),
            self.bytes,
            suppressed=self.suppressed,
            filtered_with=self.filtered_with,
        )


# Columns of a row that name a user or one of its identifiers.
_IDENTITY_COLUMNS = ("user_id", "anonymous_id", "canonical_user_id", "previous_id")


def is_suppressed_row(row: TableRow, suppressed: AbstractSet[str]) -> bool:
    """True when the row belongs to a suppressed user: its user_id, anonymous_id, canonical
    user or previous_id is on the list; in identity_map its identifier or canonical user; in
    users its id."""
    values = row.values
    columns: tuple[str, ...] = _IDENTITY_COLUMNS
    if row.table == IDENTITY_MAP:
        columns = ("identifier", "canonical_user_id")
    elif row.table == USERS:
        columns = ("id",)
    for column in columns:
        value = values.get(column)
        if value is not None and str(value) in suppressed:
            return True
    return False


def drop_suppressed(batch: FlushBatch, suppressed: AbstractSet[str]) -> FlushBatch:
    """`batch` without the rows of suppressed users (every row of a record one of whose rows
    is suppressed, by message id), the dropped records counted by topic. Offsets are unchanged:
    the records are consumed, only not loaded. A preparation made from the dropped rows is
    discarded."""
    if not suppressed or not batch.rows:
        return replace(batch, filtered_with=suppressed) if suppressed else batch
    # a record's rows share its message id; a row without one (never the case for events)
    # stands alone, so it cannot take other id-less rows with it
    gone_ids = {
        r.message_id for r in batch.rows if r.message_id and is_suppressed_row(r, suppressed)
    }
    if not gone_ids and not any(is_suppressed_row(r, suppressed) for r in batch.rows):
        return replace(batch, filtered_with=suppressed)
    keep: list[TableRow] = []
    records: set[tuple[str, object, object]] = set()
    for row in batch.rows:
        if row.message_id not in gone_ids and not is_suppressed_row(row, suppressed):
            keep.append(row)
            continue
        topic = row.values.get("_segflow_topic")
        if topic is not None:
            part, offset = row.values.get("_segflow_partition"), row.values.get("_segflow_offset")
            records.add((str(topic), part, offset))
    counts = dict(batch.suppressed)
    for topic, _partition, _offset in records:
        counts[topic] = counts.get(topic, 0) + 1
    batch.discard_prepared()
    return replace(batch, rows=keep, suppressed=counts, filtered_with=suppressed, prepared=None)


@dataclass
class Snapshot:
    """What `peek` saw: the batch a flush would take then, and the buffers it came from."""

    batch: FlushBatch
    marks: list[tuple[PartitionBuffer, int, int, int]]  # buffer, rows, records, bytes
    at: float


class Batcher:
    """Buffers of the owned partitions and the decision when to flush."""

    def __init__(
        self,
        flush_rows: int,
        flush_bytes: int,
        flush_age_s: float,
        max_buffered_bytes: int,
        *,
        suppressed: Callable[[], AbstractSet[str]] | None = None,
    ) -> None:
        self.suppressed = suppressed
        """The current suppression set (identifiers of forgotten users), read at each take."""
        self.flush_rows = flush_rows
        self.flush_bytes = flush_bytes
        self.flush_age_s = flush_age_s
        self.max_buffered_bytes = max_buffered_bytes
        self._buffers: dict[PartitionKey, PartitionBuffer] = {}
        self.total_bytes = 0
        self.total_records = 0

    # -- ownership ---------------------------------------------------------------------------
    def assign(self, topic: str, partition: int, stored: int) -> None:
        """Own a partition whose warehouse offset is `stored`; an old buffer is dropped."""
        self.drop(topic, partition)
        self._buffers[(topic, partition)] = PartitionBuffer(topic, partition, stored)

    def drop(self, topic: str, partition: int) -> None:
        buf = self._buffers.pop((topic, partition), None)
        if buf is not None:
            self.total_bytes -= buf.bytes
            self.total_records -= buf.records

    def owns(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._buffers

    def owned(self) -> list[PartitionKey]:
        return list(self._buffers)

    def stored(self) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset in the warehouse) of owned partitions loaded before."""
        return [(b.topic, b.partition, b.base) for b in self._buffers.values() if b.base >= 0]

    def held(self, topic: str, partition: int) -> int:
        """Records buffered for a partition and not flushed yet."""
        buf = self._buffers.get((topic, partition))
        return 0 if buf is None else buf.records

    def position(self, topic: str, partition: int) -> int | None:
        """Where consumption of the partition stands (next offset), if known."""
        buf = self._buffers.get((topic, partition))
        if buf is None:
            return None
        if buf.next_offset is not None:
            return buf.next_offset
        return buf.base if buf.base >= 0 else None

    # -- buffering ---------------------------------------------------------------------------
    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        rows: list[TableRow],
        size: int,
        now: float,
        born: float | None = None,
    ) -> bool:
        """Buffer one record's rows; False (and nothing kept) if the partition is not owned or
        the offset is behind what is buffered already (a stale redelivery). `born`: when the
        record was produced (its Kafka timestamp, on the clock of `now`); a buffer's age counts
        from its first record's `born`, or `now` if that is earlier."""
        buf = self._buffers.get((topic, partition))
        if buf is None:
            return False
        if buf.next_offset is not None and offset < buf.next_offset:
            return False
        if buf.next_offset is None and buf.base >= 0 and offset < buf.base:
            return False
        if buf.opened_at is None:
            buf.opened_at = now if born is None or born > now else born
        buf.rows.extend(rows)
        buf.next_offset = offset + 1
        buf.records += 1
        buf.bytes += size
        self.total_bytes += size
        self.total_records += 1
        return True

    def ready(self, now: float) -> bool:
        """True when some partition reached its row count, byte size or age, or all buffers
        together reached the memory bound."""
        if self.total_bytes >= self.max_buffered_bytes:
            return True
        for buf in self._buffers.values():
            if buf.opened_at is None:
                continue
            if (
                buf.records >= self.flush_rows
                or buf.bytes >= self.flush_bytes
                or now - buf.opened_at >= self.flush_age_s
            ):
                return True
        return False

    def due_in(self, now: float) -> float | None:
        """Seconds until the oldest buffer reaches the flush age (0 when one has); None when
        nothing is buffered."""
        oldest = min(
            (b.opened_at for b in self._buffers.values() if b.opened_at is not None), default=None
        )
        return None if oldest is None else max(0.0, oldest + self.flush_age_s - now)

    def take(self, partitions: set[PartitionKey] | None = None) -> FlushBatch | None:
        """Everything buffered (of `partitions` only, if given), as one flush; buffers restart
        where the taken ones end."""
        snapshot = self.peek(0.0, partitions)
        return None if snapshot is None else self.take_snapshot(snapshot)

    def peek(self, now: float, partitions: set[PartitionKey] | None = None) -> Snapshot | None:
        """The batch `take(partitions)` would return now, leaving the buffers as they are."""
        slices: list[PartitionSlice] = []
        rows: list[TableRow] = []
        marks: list[tuple[PartitionBuffer, int, int, int]] = []
        total_bytes = 0
        for key, buf in self._buffers.items():
            if buf.next_offset is None or (partitions is not None and key not in partitions):
                continue
            slices.append(
                PartitionSlice(buf.topic, buf.partition, buf.base, buf.next_offset, buf.records)
            )
            rows.extend(buf.rows)
            marks.append((buf, len(buf.rows), buf.records, buf.bytes))
            total_bytes += buf.bytes
        if not slices:
            return None
        batch = FlushBatch(slices, rows, sum(s.records for s in slices), total_bytes)
        return Snapshot(self._filtered(batch), marks, now)

    def _filtered(self, batch: FlushBatch) -> FlushBatch:
        """The batch filtered with the current suppression set, unless it already was."""
        if self.suppressed is None:
            return batch
        current = self.suppressed()
        if batch.filtered_with is current:
            return batch
        return drop_suppressed(batch, current)

    def take_snapshot(self, snapshot: Snapshot) -> FlushBatch | None:
        """Take exactly what `snapshot` saw (what was buffered since stays, its age counted
        from the snapshot); None, and nothing taken, if a buffer it saw was dropped, re-sought
        or taken since."""
        for (buf, _rows, _records, _bytes), s in zip(
            snapshot.marks, snapshot.batch.slices, strict=True
        ):
            if self._buffers.get((buf.topic, buf.partition)) is not buf or buf.base != s.expected:
                return None
        for (buf, n_rows, n_records, n_bytes), s in zip(
            snapshot.marks, snapshot.batch.slices, strict=True
        ):
            rest = PartitionBuffer(buf.topic, buf.partition, s.new)
            if buf.records > n_records:
                rest.next_offset = buf.next_offset
                rest.rows = buf.rows[n_rows:]
                rest.records = buf.records - n_records
                rest.bytes = buf.bytes - n_bytes
                rest.opened_at = snapshot.at
            self._buffers[(buf.topic, buf.partition)] = rest
        batch = snapshot.batch
        self.total_bytes -= batch.bytes
        self.total_records -= batch.records
        return self._filtered(batch)  # a forget published since the snapshot counts too
