"""Records whose data the warehouse cannot take, set apart without stopping their partition.

Two lines of defence, both pure functions here (the consumer carries them out):

1. Pre-flight, where a record is first turned into rows (`oversized`): a value, an `_unmapped`
   document or an audit payload over Snowflake's 16 MB LOB size cannot be loaded anywhere (a
   value too large for its column would go to `_unmapped`, which has the same limit), so the
   record goes to the DLQ with reason ``too_large`` at once. The exact check only runs for
   records whose encoded size could reach the limit at all, so it costs nothing in practice.
   Values Snowflake would refuse in a typed column are typed so that they never reach one
   (evolution.value_type): numbers beyond 38 digits are floats, timestamps outside years
   1-9999 are text, and a column that meets them widens up the ladder (evolution.LADDER);
   non-finite floats, objects and values for columns off the ladder go to `_unmapped`.

2. The misfit path, for what only the warehouse finds (errors.WarehouseMisfitError): the failed
   flush is split (`split`) and each part loaded in order, offsets moving with the rows in each
   part's own transaction (a partition's parts chain their compare-and-set: the first expects
   the batch's stored offset, the next expects where the first ended). A part that fails again
   is split again, until the refused record stands alone in its part; that record goes to the
   DLQ (acknowledged by Kafka before the offsets move past it) and its part loads without rows,
   moving the offsets only. No good row is lost or loaded twice: every part is all or nothing.
   A batch of several partitions splits between partitions first, then a partition's records
   in halves (bisection): k bad records among n cost about 2·k·log2(n) flushes.

Rows know their record by the origin columns (`_segflow_topic`, `_segflow_partition`,
`_segflow_offset`); a row without them (a users/accounts profile row) belongs to the record of
the row before it, which `rows.event_rows` always emits first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from schemas.snowflake_limits import MAX_VARCHAR_BYTES, MAX_VARIANT_BYTES
from sinks.snowflake.batcher import FlushBatch, PartitionSlice
from sinks.snowflake.rows import JsonText, TableRow

TOO_LARGE = "too_large"
# A record's encoded size times this bounds the bytes of any value or document made from it
# (JSON re-serialisation adds quotes, ISO timestamps and separators, never more than double).
_GROWTH = 2
_LIMIT = min(MAX_VARCHAR_BYTES, MAX_VARIANT_BYTES)

Origin = tuple[str, int, int]


def oversized(rows: Sequence[TableRow], record_bytes: int) -> str | None:
    """Why these rows of one record cannot be loaded (a value or document over the LOB size),
    or None. Free for records under half the limit: nothing made of them can reach it."""
    if record_bytes * _GROWTH <= _LIMIT:
        return None
    for row in rows:
        for name, value in row.values.items():
            if _size(value) > _LIMIT:
                return f"{row.table}.{name} holds a value over {_LIMIT} bytes"
        if row.unmapped and _size(row.unmapped) > _LIMIT:
            return f"{row.table}._unmapped would be over {_LIMIT} bytes"
    return None


def _size(value: Any) -> int:
    if value is None or isinstance(value, bool | int | float):
        return 0
    if isinstance(value, str):
        return len(value) if len(value) * 4 <= _LIMIT else len(value.encode("utf-8", "replace"))
    if isinstance(value, JsonText | bytes):
        return len(value)
    try:
        return len(orjson.dumps(value, default=str))
    except TypeError:
        return len(str(value))


def records_of(rows: Iterable[TableRow]) -> list[tuple[Origin, list[TableRow]]]:
    """The rows of a batch grouped by the record they came from, in order."""
    out: list[tuple[Origin, list[TableRow]]] = []
    current: Origin | None = None
    for row in rows:
        v = row.values
        offset = v.get("_segflow_offset")
        if offset is not None:
            origin = (str(v["_segflow_topic"]), int(v["_segflow_partition"]), int(offset))
        elif current is not None:
            origin = current
        else:
            raise ValueError(f"a {row.table} row of no record leads the batch")
        if origin != current:
            out.append((origin, []))
            current = origin
        out[-1][1].append(row)
    return out


def split(batch: FlushBatch) -> list[FlushBatch] | None:
    """`batch` as two batches to load in order (the same rows and offset moves), or None when
    it holds the rows of one record only (that record is the one refused)."""
    slices = batch.slices
    if len(slices) > 1:
        half = len(slices) // 2
        return [_of_slices(batch, slices[:half]), _of_slices(batch, slices[half:])]
    (whole,) = slices
    records = records_of(batch.rows)
    if len(records) <= 1:
        return None
    half = len(records) // 2
    mid = records[half][0][2]  # the first offset of the second half
    first = [r for _, rows in records[:half] for r in rows]
    second = [r for _, rows in records[half:] for r in rows]
    n_first = min(half, whole.records)
    bytes_first = batch.bytes * len(first) // max(1, len(batch.rows))
    return [
        FlushBatch(
            [PartitionSlice(whole.topic, whole.partition, whole.expected, mid, n_first)],
            first,
            n_first,
            bytes_first,
        ),
        FlushBatch(
            [PartitionSlice(whole.topic, whole.partition, mid, whole.new, whole.records - n_first)],
            second,
            whole.records - n_first,
            batch.bytes - bytes_first,
        ),
    ]


def _of_slices(batch: FlushBatch, slices: list[PartitionSlice]) -> FlushBatch:
    keys = {(s.topic, s.partition) for s in slices}
    rows = [
        r
        for (topic, partition, _), rows in records_of(batch.rows)
        if (topic, partition) in keys
        for r in rows
    ]
    records = sum(s.records for s in slices)
    share = batch.bytes * records // max(1, batch.records)
    return FlushBatch(list(slices), rows, records, share)


def refused_record(batch: FlushBatch) -> Origin:
    """Where the one record of a batch `split` cannot divide came from."""
    records = records_of(batch.rows)
    if records:
        return records[0][0]
    (whole,) = batch.slices
    return (whole.topic, whole.partition, whole.new - 1)


def offsets_only(batch: FlushBatch) -> FlushBatch:
    """`batch` without its rows: its offsets move, nothing is written."""
    return FlushBatch(list(batch.slices), [], batch.records, 0)
