"""Kafka offsets owned by the warehouse: `_segflow_offsets` in the control schema.

One row per (consumer group, topic, partition) holding the next offset to load (-1: nothing
loaded yet). Snowflake enforces no unique constraint, so "one row" is kept by the protocol:

- **Creating.** A partition seen for the first time gets its row from
  ``INSERT ... SELECT ... WHERE NOT EXISTS`` (autocommitted, or inside the caller's
  transaction). Two sessions creating the same row at once can both insert (neither sees the
  other's uncommitted row), so every creation is followed by a read that checks for duplicates
  after the commit. Each insert statement tags its rows with a fresh ``ROW_ID``: duplicates that
  agree on the offset are repaired deterministically by deleting all but the smallest ROW_ID
  (one statement, idempotent: sessions repairing at once delete the same rows). MERGE would be
  the natural upsert, but the emulator cannot run it inside a transaction (EMULATOR.md) and it
  does not make concurrent inserts unique either.
- **Reading.** Duplicates that disagree on the offset (someone edited the table by hand, or
  rows of an old version without ROW_ID) cannot be repaired safely: the read refuses with
  DuplicateOffsetsError (fatal) naming the partitions.
- **Compare-and-set.** A flush moves its partitions' rows with one UPDATE ... FROM VALUES
  inside its transaction, joined to its group's partitions that have exactly one row (a
  GROUP BY ... HAVING COUNT(*) = 1 over the same table), so a duplicated partition moves no row
  at all. It succeeds only when the UPDATE's row count equals the number of partitions: then
  every partition has one row and that row matched its expected offset. (A row count alone,
  without the join, is not enough: a duplicated partition counts twice and hides a fenced one.)
  Once a partition's row is committed no new duplicate of it can appear (a later insert sees
  it), so the check cannot miss one that commits later. One statement whatever the partition
  count (one UPDATE per partition would cost a warehouse round trip each; a separate duplicate
  check, one more).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from schemas.errors import FatalError
from schemas.topics import PartitionKey
from sinks.snowflake.ddl import qualified, quote
from sinks.snowflake.tables import OFFSETS

UNKNOWN = -1
REPAIR_ATTEMPTS = 3

Execute = Callable[[str, Sequence[Any]], Any]
"""Runs one statement with binds and returns the cursor."""


class DuplicateOffsetsError(FatalError):
    """Partitions with several offset rows that cannot be repaired safely."""

    def __init__(self, table: str, group: str, partitions: Sequence[PartitionKey]) -> None:
        named = ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)[:10])
        super().__init__(
            f"{table}: consumer group {group} has several rows for {len(partitions)} partitions "
            f"({named}) that cannot be merged safely (different offsets, or rows without "
            "ROW_ID); stop the group's sinks, keep one row per partition (the offset to resume "
            "from), delete the others, then start the sinks again"
        )
        self.partitions = list(partitions)


def _values(rows: int, width: int) -> str:
    one = "(" + ", ".join(["?"] * width) + ")"
    return ", ".join([one] * rows)


def _distinct(partitions: Sequence[PartitionKey]) -> list[PartitionKey]:
    return list(dict.fromkeys((str(t), int(p)) for t, p in partitions))


class OffsetStore:
    """Reads, creates and compare-and-sets the offsets of one consumer group."""

    def __init__(self, schema: str, group_id: str) -> None:
        self.schema = schema
        self.group_id = group_id
        self.table = qualified(schema, OFFSETS)
        self._upgraded = False

    def create_sql(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            '"CONSUMER_GROUP" VARCHAR, "TOPIC" VARCHAR, "PARTITION" NUMBER(38,0), '
            '"NEXT_OFFSET" NUMBER(38,0), "UPDATED_AT" TIMESTAMP_TZ, "ROW_ID" VARCHAR)'
        )

    def upgrade_sql(self) -> str:
        """ROW_ID added to a table made by a version without it."""
        return f'ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS "ROW_ID" VARCHAR'

    def upgrade(self, execute: Execute) -> None:
        """Run `upgrade_sql` once per store. DDL: call it outside a transaction (`ensure` does
        on its first call; a caller that ensures inside a transaction calls this first)."""
        if not self._upgraded:
            execute(self.upgrade_sql(), [])
            self._upgraded = True

    def insert_missing_sql(self, count: int) -> str:
        """Rows for partitions that have none. Binds: group, row id, (topic, partition) x count,
        group."""
        return (
            f"INSERT INTO {self.table} "
            '("CONSUMER_GROUP", "TOPIC", "PARTITION", "NEXT_OFFSET", "UPDATED_AT", "ROW_ID") '
            f"SELECT ?, v.column1, v.column2, {UNKNOWN}, CURRENT_TIMESTAMP(), ? "
            f"FROM (SELECT column1, column2 FROM VALUES {_values(count, 2)}) v "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.table} o "
            'WHERE o."CONSUMER_GROUP" = ? AND o."TOPIC" = v.column1 '
            'AND o."PARTITION" = v.column2)'
        )

    def read_sql(self, topics: int) -> str:
        """Per partition: its row count and lowest and highest offset. Binds: group, topics."""
        marks = ", ".join(["?"] * topics)
        return (
            f'SELECT "TOPIC", "PARTITION", COUNT(*), MIN("NEXT_OFFSET"), MAX("NEXT_OFFSET") '
            f'FROM {self.table} WHERE "CONSUMER_GROUP" = ? AND "TOPIC" IN ({marks}) '
            'GROUP BY "TOPIC", "PARTITION"'
        )

    def repair_sql(self) -> str:
        """Delete a partition's duplicate rows holding `offset`, all but the smallest ROW_ID.
        Binds: group, topic, partition, offset, group, topic, partition."""
        return (
            f'DELETE FROM {self.table} WHERE "CONSUMER_GROUP" = ? AND "TOPIC" = ? '
            'AND "PARTITION" = ? AND "NEXT_OFFSET" = ? AND "ROW_ID" > ('
            f'SELECT MIN("ROW_ID") FROM {self.table} WHERE "CONSUMER_GROUP" = ? '
            'AND "TOPIC" = ? AND "PARTITION" = ?)'
        )

    def cas_sql(self, count: int) -> str:
        """Move `count` partitions from their expected to their new offsets, only where the
        partition has exactly one row (`k`). Binds: (topic, partition, expected, new) x count,
        then the group id."""
        return (
            f"UPDATE {self.table} o SET {quote('next_offset')} = v.column4, "
            f"{quote('updated_at')} = CURRENT_TIMESTAMP() "
            f"FROM (SELECT column1, column2, column3, column4 FROM VALUES {_values(count, 4)}) v, "
            '(SELECT "CONSUMER_GROUP", "TOPIC", "PARTITION" '
            f'FROM {self.table} WHERE "CONSUMER_GROUP" = ? '
            'GROUP BY "CONSUMER_GROUP", "TOPIC", "PARTITION" HAVING COUNT(*) = 1) k '
            'WHERE o."CONSUMER_GROUP" = k."CONSUMER_GROUP" AND o."TOPIC" = k."TOPIC" '
            'AND o."PARTITION" = k."PARTITION" AND o."TOPIC" = v.column1 '
            'AND o."PARTITION" = v.column2 AND o."NEXT_OFFSET" = v.column3'
        )

    # -- operations on a connection ----------------------------------------------------------
    def insert_missing(self, execute: Execute, partitions: Sequence[PartitionKey]) -> None:
        """Insert -1 rows for partitions without one (no duplicate check: see `ensure`)."""
        parts = _distinct(partitions)
        if not parts:
            return
        binds: list[Any] = [self.group_id, uuid.uuid4().hex]
        for topic, partition in parts:
            binds += [topic, partition]
        binds.append(self.group_id)
        execute(self.insert_missing_sql(len(parts)), binds)

    def ensure(
        self, execute: Execute, partitions: Sequence[PartitionKey]
    ) -> dict[PartitionKey, int]:
        """Create missing rows, then return the stored next offset of every partition (the read
        repairs duplicates another session's creation made at the same time)."""
        if not partitions:
            return {}
        self.upgrade(execute)
        self.insert_missing(execute, partitions)
        return self.read(execute, partitions)

    def read(self, execute: Execute, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        """The stored next offset per partition (-1 where none). Duplicates that agree are
        repaired; duplicates that disagree raise DuplicateOffsetsError."""
        parts = _distinct(partitions)
        if not parts:
            return {}
        topics = sorted({t for t, _ in parts})
        wanted = set(parts)
        for _attempt in range(REPAIR_ATTEMPTS):
            cur = execute(self.read_sql(len(topics)), [self.group_id, *topics])
            stored: dict[PartitionKey, int] = {}
            repair: dict[PartitionKey, int] = {}
            conflicting: list[PartitionKey] = []
            for t, p, count, low, high in cur.fetchall():
                key = (str(t), int(p))
                if key not in wanted:
                    continue
                if int(count) > 1:
                    if int(low) != int(high):
                        conflicting.append(key)
                    repair[key] = int(high)
                stored[key] = int(high)
            if conflicting:
                raise DuplicateOffsetsError(self.table, self.group_id, conflicting)
            if not repair:
                return {tp: stored.get(tp, UNKNOWN) for tp in parts}
            for (topic, partition), offset in sorted(repair.items()):
                key_binds = [self.group_id, topic, partition]
                execute(self.repair_sql(), [*key_binds, offset, *key_binds])
        raise DuplicateOffsetsError(self.table, self.group_id, sorted(repair))

    def compare_and_set(self, execute: Execute, moves: Sequence[tuple[str, int, int, int]]) -> bool:
        """(topic, partition, expected, new) for each partition; True when every partition has
        one row and it was at its expected offset and moved (one statement, `cas_sql`). Run
        inside the flush's transaction: on False the caller rolls back."""
        if not moves:
            return True
        if len({(t, p) for t, p, _, _ in moves}) != len(moves):
            raise ValueError("compare_and_set: a partition appears twice in one flush")
        binds: list[Any] = []
        for move in moves:
            binds += list(move)
        binds.append(self.group_id)
        cur = execute(self.cas_sql(len(moves)), binds)
        return int(cur.rowcount or 0) == len(moves)
