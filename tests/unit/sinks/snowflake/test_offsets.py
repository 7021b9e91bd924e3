"""offsets.py's compare-and-set and row creation against a fake `_segflow_offsets` that runs the
store's statements on rows in memory (the statements' meaning, keyed by their first words)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from unittest.mock import MagicMock

import pytest

from sinks.snowflake.offsets import DuplicateOffsetsError, OffsetStore


@dataclass
class Row:
    group: str
    topic: str
    partition: int
    next_offset: int
    row_id: str | None


class FakeOffsets:
    """The offsets table of one warehouse; `statements` records what ran."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.statements: list[str] = []

    def add(self, topic: str, partition: int, offset: int, row_id: str | None = "r") -> None:
        self.rows.append(Row("g1", topic, partition, offset, row_id))

    def of(self, topic: str, partition: int) -> list[int]:
        return [r.next_offset for r in self.rows if (r.topic, r.partition) == (topic, partition)]

    def execute(self, sql: str, binds: Sequence[Any]) -> Any:
        self.statements.append(sql.split()[0])
        cur = MagicMock(spec_set=["rowcount", "fetchall"])
        cur.rowcount, result = self._run(sql, list(binds))
        cur.fetchall.return_value = result
        return cur

    def _run(self, sql: str, b: list[Any]) -> tuple[int, list[tuple[Any, ...]]]:
        if sql.startswith("ALTER"):
            return 0, []
        if sql.startswith("INSERT"):
            group, row_id, pairs = b[0], b[1], b[2:-1]
            added = 0
            for topic, part in zip(pairs[::2], pairs[1::2], strict=True):
                if not self._of(group, topic, part):
                    self.rows.append(Row(group, topic, part, -1, row_id))
                    added += 1
            return added, []
        if sql.startswith("UPDATE"):
            # the compare-and-set: only partitions with exactly one row move (its join `k`)
            assert "HAVING COUNT(*) = 1" in sql
            group, quads = b[-1], b[:-1]
            moved = 0
            for i in range(0, len(quads), 4):
                topic, part, expected, new = quads[i : i + 4]
                rows = self._of(group, topic, part)
                for r in rows if len(rows) == 1 else []:
                    if r.next_offset == expected:
                        r.next_offset = new
                        moved += 1
            return moved, []
        if sql.startswith("DELETE"):
            group, topic, part, offset = b[:4]
            rows = self._of(group, topic, part)
            ids = [r.row_id for r in rows if r.row_id is not None]
            low = min(ids) if ids else None
            gone = [
                r
                for r in rows
                if r.next_offset == offset and r.row_id is not None and low and r.row_id > low
            ]
            self.rows = [r for r in self.rows if r not in gone]
            return len(gone), []
        if sql.startswith("SELECT"):
            out = [(*k, len(v), min(v), max(v)) for k, v in self._groups(b[0], b[1:]).items()]
            return 0, out
        raise AssertionError(f"unexpected statement {sql}")

    def _of(self, group: str, topic: str, part: int) -> list[Row]:
        return [r for r in self.rows if (r.group, r.topic, r.partition) == (group, topic, part)]

    def _groups(self, group: str, topics: list[str]) -> dict[tuple[str, int], list[int]]:
        out: dict[tuple[str, int], list[int]] = {}
        for r in self.rows:
            if r.group == group and r.topic in topics:
                out.setdefault((r.topic, r.partition), []).append(r.next_offset)
        return out


STORE = OffsetStore("_segflow", "g1")


def test_all_partitions_at_their_expected_offsets_move() -> None:
    table = FakeOffsets()
    table.add("t", 0, 10)
    table.add("t", 1, -1)
    assert STORE.compare_and_set(table.execute, [("t", 0, 10, 20), ("t", 1, -1, 5)])
    assert (table.of("t", 0), table.of("t", 1)) == ([20], [5])
    assert table.statements == ["UPDATE"]  # one statement whatever the count


def test_one_partition_moved_by_another_writer_fences_the_flush() -> None:
    table = FakeOffsets()
    table.add("t", 0, 10)
    table.add("t", 1, 7)  # another instance loaded up to 7
    assert not STORE.compare_and_set(table.execute, [("t", 0, 10, 20), ("t", 1, 5, 9)])


def test_a_duplicated_row_cannot_hide_a_fenced_partition() -> None:
    table = FakeOffsets()
    table.add("t", 0, 10, "a")
    table.add("t", 0, 10, "b")  # two sessions created the row at once
    table.add("t", 1, 7)  # fenced: expected 5
    # the UPDATE moves two rows for two partitions: a row count alone says "all moved"
    assert not STORE.compare_and_set(table.execute, [("t", 0, 10, 20), ("t", 1, 5, 9)])


def test_duplicated_rows_at_the_expected_offset_fence_the_flush() -> None:
    table = FakeOffsets()
    table.add("t", 0, 10, "a")
    table.add("t", 0, 10, "b")  # both rows agree: the row count would be 3 for 2 partitions
    table.add("t", 1, 5)
    assert not STORE.compare_and_set(table.execute, [("t", 0, 10, 20), ("t", 1, 5, 9)])
    assert table.of("t", 0) == [10, 10]  # a duplicated partition moves no row


def test_a_partition_twice_in_one_flush_is_refused() -> None:
    with pytest.raises(ValueError):
        STORE.compare_and_set(FakeOffsets().execute, [("t", 0, 1, 2), ("t", 0, 2, 3)])


def test_ensure_creates_each_row_once() -> None:
    table = FakeOffsets()
    store = OffsetStore("_segflow", "g1")
    assert store.ensure(table.execute, [("t", 0), ("t", 1), ("t", 0)]) == {
        ("t", 0): -1,
        ("t", 1): -1,
    }
    assert store.ensure(table.execute, [("t", 0), ("u", 0)]) == {("t", 0): -1, ("u", 0): -1}
    assert len(table.rows) == 3
    assert table.statements.count("ALTER") == 1  # the table's upgrade, once per store


def test_duplicates_made_by_concurrent_creation_are_repaired_to_one_row() -> None:
    table = FakeOffsets()
    table.add("t", 0, -1, "b")
    table.add("t", 0, -1, "a")  # the other session's insert, committed after ours
    table.add("t", 1, 4)
    assert STORE.read(table.execute, [("t", 0), ("t", 1)]) == {("t", 0): -1, ("t", 1): 4}
    assert [(r.partition, r.row_id) for r in table.rows] == [(0, "a"), (1, "r")]
    # then the flush's compare-and-set succeeds
    assert STORE.compare_and_set(table.execute, [("t", 0, -1, 3)])


def test_duplicates_that_disagree_are_refused_with_the_partitions_named() -> None:
    table = FakeOffsets()
    table.add("t", 2, 5, "a")
    table.add("t", 2, 9, "b")
    with pytest.raises(DuplicateOffsetsError, match=r"t\[2\]"):
        STORE.read(table.execute, [("t", 2)])


def test_duplicates_without_row_ids_are_refused_not_looped_on() -> None:
    table = FakeOffsets()
    table.add("t", 0, 5, None)
    table.add("t", 0, 5, None)  # rows of a version that had no ROW_ID
    with pytest.raises(DuplicateOffsetsError):
        STORE.read(table.execute, [("t", 0)])
    assert table.statements.count("SELECT") == 3
