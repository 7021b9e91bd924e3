"""Kafka offsets owned by the warehouse: `_segflow_offsets` in the control schema.

One row per (consumer group, topic, partition) holding the next offset to load. A flush moves
its partitions' rows with one compare-and-set UPDATE inside its transaction; the row count tells
whether every partition was still where this instance left it. A partition seen for the first
time gets a row with next_offset = -1 ("nothing loaded yet"), inserted when it is assigned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sinks.snowflake.ddl import qualified, quote
from sinks.snowflake.tables import OFFSETS

UNKNOWN = -1

Execute = Callable[[str, Sequence[Any]], Any]
"""Runs one statement with binds and returns the cursor."""


def _values(rows: int, width: int) -> str:
    one = "(" + ", ".join(["?"] * width) + ")"
    return ", ".join([one] * rows)


class OffsetStore:
    """Reads, creates and compare-and-sets the offsets of one consumer group."""

    def __init__(self, schema: str, group_id: str) -> None:
        self.schema = schema
        self.group_id = group_id
        self.table = qualified(schema, OFFSETS)

    def create_sql(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            '"CONSUMER_GROUP" VARCHAR, "TOPIC" VARCHAR, "PARTITION" NUMBER(38,0), '
            '"NEXT_OFFSET" NUMBER(38,0), "UPDATED_AT" TIMESTAMP_TZ)'
        )

    def insert_missing_sql(self, count: int) -> str:
        """Rows for partitions that have none. Binds: (topic, partition) x count."""
        return (
            f"INSERT INTO {self.table} "
            '("CONSUMER_GROUP", "TOPIC", "PARTITION", "NEXT_OFFSET", "UPDATED_AT") '
            f"SELECT ?, v.column1, v.column2, {UNKNOWN}, CURRENT_TIMESTAMP() "
            f"FROM (SELECT column1, column2 FROM VALUES {_values(count, 2)}) v "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.table} o "
            'WHERE o."CONSUMER_GROUP" = ? AND o."TOPIC" = v.column1 '
            'AND o."PARTITION" = v.column2)'
        )

    def read_sql(self, topics: int) -> str:
        marks = ", ".join(["?"] * topics)
        return (
            f'SELECT "TOPIC", "PARTITION", MAX("NEXT_OFFSET") FROM {self.table} '
            f'WHERE "CONSUMER_GROUP" = ? AND "TOPIC" IN ({marks}) GROUP BY "TOPIC", "PARTITION"'
        )

    def cas_sql(self, count: int) -> str:
        """Move `count` partitions from their expected to their new offsets.
        Binds: (topic, partition, expected, new) x count, then the group id."""
        return (
            f"UPDATE {self.table} o SET {quote('next_offset')} = v.column4, "
            f"{quote('updated_at')} = CURRENT_TIMESTAMP() "
            f"FROM (SELECT column1, column2, column3, column4 FROM VALUES {_values(count, 4)}) v "
            'WHERE o."CONSUMER_GROUP" = ? AND o."TOPIC" = v.column1 '
            'AND o."PARTITION" = v.column2 AND o."NEXT_OFFSET" = v.column3'
        )

    # -- operations on a connection ----------------------------------------------------------
    def ensure(
        self, execute: Execute, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """Create missing rows, then return the stored next offset of every partition."""
        if not partitions:
            return {}
        binds: list[Any] = [self.group_id]
        for topic, partition in partitions:
            binds += [topic, partition]
        binds.append(self.group_id)
        execute(self.insert_missing_sql(len(partitions)), binds)
        return self.read(execute, partitions)

    def read(
        self, execute: Execute, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        topics = sorted({t for t, _ in partitions})
        cur = execute(self.read_sql(len(topics)), [self.group_id, *topics])
        stored = {(str(t), int(p)): int(o) for t, p, o in cur.fetchall()}
        return {tp: stored.get(tp, UNKNOWN) for tp in partitions}

    def compare_and_set(self, execute: Execute, moves: Sequence[tuple[str, int, int, int]]) -> bool:
        """(topic, partition, expected, new) for each partition; True when all moved."""
        if not moves:
            return True
        binds: list[Any] = []
        for move in moves:
            binds += list(move)
        binds.append(self.group_id)
        cur = execute(self.cas_sql(len(moves)), binds)
        return int(cur.rowcount or 0) == len(moves)
