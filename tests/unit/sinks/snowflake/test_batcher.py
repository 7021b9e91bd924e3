from __future__ import annotations

from sinks.snowflake.batcher import Batcher, is_suppressed_row
from sinks.snowflake.rows import TableRow
from sinks.snowflake.tables import Kind


def row(topic: str = "t", partition: int = 0, n: int = 0) -> TableRow:
    values = {"id": f"m{n}", "_segflow_topic": topic, "_segflow_partition": partition}
    return TableRow("web", "tracks", Kind.APPEND, values, None, f"m{n}")


def batcher(**kw: float) -> Batcher:
    args = {"flush_rows": 3, "flush_bytes": 1000, "flush_age_s": 5.0, "max_buffered_bytes": 5000}
    args.update(kw)
    return Batcher(
        int(args["flush_rows"]),
        int(args["flush_bytes"]),
        args["flush_age_s"],
        int(args["max_buffered_bytes"]),
    )


def test_unowned_partitions_are_not_buffered() -> None:
    b = batcher()
    assert not b.add("t", 0, 0, [row()], 10, now=0.0)
    assert b.take() is None


def test_row_count_triggers_a_flush_with_expected_and_new_offsets() -> None:
    b = batcher()
    b.assign("t", 0, 100)
    for off in (100, 101):
        assert b.add("t", 0, off, [row(n=off)], 10, now=0.0)
    assert not b.ready(now=0.1)
    b.add("t", 0, 102, [row(n=102)], 10, now=0.1)
    assert b.ready(now=0.1)
    batch = b.take()
    assert batch is not None
    assert batch.moves() == [("t", 0, 100, 103)]
    assert batch.records == 3 and len(batch.rows) == 3
    # the next buffer expects what this flush writes
    b.add("t", 0, 103, [row(n=103)], 10, now=1.0)
    assert b.take().moves() == [("t", 0, 103, 104)]  # type: ignore[union-attr]


def test_bytes_age_and_memory_bound_trigger() -> None:
    b = batcher(flush_rows=1000)
    b.assign("t", 0, -1)
    b.add("t", 0, 0, [row()], 999, now=0.0)
    assert not b.ready(now=0.0)
    b.add("t", 0, 1, [row()], 1, now=0.0)
    assert b.ready(now=0.0)  # bytes

    b = batcher(flush_rows=1000)
    b.assign("t", 0, -1)
    b.add("t", 0, 0, [row()], 1, now=10.0)
    assert not b.ready(now=14.9)
    assert b.ready(now=15.0)  # age

    b = batcher(flush_rows=1000, flush_bytes=10_000, max_buffered_bytes=100)
    for p in range(3):
        b.assign("t", p, -1)
        b.add("t", p, 0, [row(partition=p)], 40, now=0.0)
    assert b.ready(now=0.0)  # all buffers together


def test_take_includes_every_moved_partition_and_records_without_rows() -> None:
    b = batcher()
    b.assign("t", 0, 5)
    b.assign("t", 1, -1)
    b.assign("t", 2, 7)
    b.add("t", 0, 5, [row()], 10, now=0.0)
    b.add("t", 1, 0, [], 10, now=0.0)  # e.g. a suppressed user's event: no rows, offset moves
    batch = b.take()
    assert batch is not None
    assert sorted(batch.moves()) == [("t", 0, 5, 6), ("t", 1, -1, 1)]
    assert b.total_bytes == 0 and b.total_records == 0


def test_stale_and_dropped_offsets_are_refused() -> None:
    b = batcher()
    b.assign("t", 0, 50)
    assert not b.add("t", 0, 49, [row()], 10, now=0.0)
    assert b.add("t", 0, 50, [row()], 10, now=0.0)
    assert not b.add("t", 0, 50, [row()], 10, now=0.0)
    b.drop("t", 0)
    assert not b.owns("t", 0) and b.total_bytes == 0


def test_without_removes_lost_partitions() -> None:
    b = batcher()
    b.assign("t", 0, 0)
    b.assign("t", 1, 0)
    b.add("t", 0, 0, [row(partition=0)], 10, now=0.0)
    b.add("t", 1, 0, [row(partition=1)], 10, now=0.0)
    batch = b.take()
    assert batch is not None
    kept = batch.without({("t", 1)})
    assert kept.moves() == [("t", 0, 0, 1)]
    assert [r.values["_segflow_partition"] for r in kept.rows] == [0]


def test_taking_some_partitions_leaves_the_others_buffered() -> None:
    """A revocation loads the revoked partitions only; the rest keep their buffers."""
    b = batcher(flush_rows=100)
    b.assign("t", 0, 10)
    b.assign("t", 1, -1)
    b.add("t", 0, 10, [row(n=10)], 10, now=0.0)
    b.add("t", 1, 0, [row(partition=1, n=0)], 10, now=0.0)
    b.add("t", 1, 1, [row(partition=1, n=1)], 10, now=0.0)
    assert (b.held("t", 0), b.held("t", 1), b.held("t", 9)) == (1, 2, 0)
    batch = b.take({("t", 1)})
    assert batch is not None
    assert batch.moves() == [("t", 1, -1, 2)] and batch.records == 2
    assert (b.held("t", 0), b.held("t", 1)) == (1, 0)
    assert b.total_records == 1 and b.total_bytes == 10
    rest = b.take()
    assert rest is not None and rest.moves() == [("t", 0, 10, 11)]


class Marker:
    def __init__(self) -> None:
        self.discarded = 0

    def discard(self) -> None:
        self.discarded += 1


def test_a_snapshot_is_taken_exactly_as_it_was_seen_and_later_records_stay() -> None:
    b = batcher(flush_rows=1000)
    b.assign("t", 0, 100)
    b.assign("t", 1, -1)
    b.add("t", 0, 100, [row(n=100)], 10, now=1.0)
    b.add("t", 1, 0, [row(partition=1, n=0), row(partition=1, n=1)], 20, now=1.0)
    snapshot = b.peek(now=2.0)
    assert snapshot is not None
    assert snapshot.batch.moves() == [("t", 0, 100, 101), ("t", 1, -1, 1)]
    # buffering goes on while the snapshot's batch is prepared
    b.add("t", 0, 101, [row(n=101)], 10, now=3.0)
    b.add("t", 0, 102, [], 10, now=3.0)  # a record without rows (tombstone) still moves
    assert b.total_records == 4 and b.total_bytes == 50

    batch = b.take_snapshot(snapshot)
    assert batch is snapshot.batch
    assert [r.values["id"] for r in batch.rows] == ["m100", "m0", "m1"]
    assert (batch.records, batch.bytes) == (2, 30)
    assert (b.total_records, b.total_bytes) == (2, 20)
    # what came after the snapshot is the next flush, chained on the snapshot's offsets; its
    # age counts from the snapshot (no later than its records' real age)
    assert not b.ready(now=6.9)
    assert b.ready(now=7.0)
    rest = b.take()
    assert rest is not None
    assert rest.moves() == [("t", 0, 101, 103)]
    assert [r.values["id"] for r in rest.rows] == ["m101"]
    assert b.take() is None


def test_a_snapshot_of_buffers_dropped_or_taken_since_is_refused_untouched() -> None:
    for change in ("drop", "take", "reassign"):
        b = batcher(flush_rows=1000)
        b.assign("t", 0, 5)
        b.assign("t", 1, 7)
        b.add("t", 0, 5, [row(n=5)], 10, now=0.0)
        b.add("t", 1, 7, [row(partition=1, n=7)], 10, now=0.0)
        snapshot = b.peek(now=0.0)
        assert snapshot is not None
        if change == "drop":  # a lost partition
            b.drop("t", 1)
        elif change == "take":  # a revoked partition, loaded in the callback
            assert b.take({("t", 1)}) is not None
        else:  # a re-seek after fencing
            b.assign("t", 1, 3)
        assert b.take_snapshot(snapshot) is None, change
        # nothing was taken: partition 0 still holds its record
        assert b.held("t", 0) == 1, change
        batch = b.take()
        assert batch is not None and ("t", 0, 5, 6) in batch.moves(), change


def test_dropping_partitions_from_a_batch_discards_its_preparation() -> None:
    b = batcher()
    for p in (0, 1):
        b.assign("t", p, -1)
        b.add("t", p, 0, [row(partition=p, n=p)], 10, now=0.0)
    batch = b.take()
    assert batch is not None
    marker = Marker()
    batch.prepared = marker
    assert batch.without(set()) is batch and marker.discarded == 0
    kept = batch.without({("t", 1)})
    assert kept.prepared is None and marker.discarded == 1
    assert kept.moves() == [("t", 0, -1, 1)]


# -- forgotten users: rows dropped as the batch is taken -----------------------------------------


def user_row(n: int, user: str | None, anon: str | None = None, table: str = "tracks") -> TableRow:
    values = {
        "id": f"m{n}",
        "user_id": user,
        "anonymous_id": anon,
        "_segflow_topic": "t",
        "_segflow_partition": 0,
        "_segflow_offset": n,
    }
    return TableRow("web", table, Kind.APPEND, values, None, f"m{n}")


def test_is_suppressed_row_by_each_identity_column() -> None:
    ids = {"u1", "a1"}
    assert is_suppressed_row(user_row(0, "u1"), ids)
    assert is_suppressed_row(user_row(0, None, "a1"), ids)
    assert not is_suppressed_row(user_row(0, "u2", "a2"), ids)
    stitched = TableRow("web", "pages", Kind.APPEND, {"canonical_user_id": "u1"}, None, "m")
    alias = TableRow("web", "aliases", Kind.APPEND, {"previous_id": "a1"}, None, "m")
    link = TableRow("web", "identity_map", Kind.REPLACE, {"identifier": "a1"}, None, "m")
    link_to = TableRow("web", "identity_map", Kind.REPLACE, {"canonical_user_id": "u1"}, None, "")
    profile = TableRow("web", "users", Kind.MERGE, {"id": "u1"}, None, "m")
    other_profile = TableRow("web", "users", Kind.MERGE, {"id": "u2"}, None, "m")
    for r in (stitched, alias, link, link_to, profile):
        assert is_suppressed_row(r, ids), r.table
    assert not is_suppressed_row(other_profile, ids)


def test_a_forget_published_after_decoding_drops_the_rows_but_moves_the_offsets() -> None:
    current: set[str] = set()
    b = Batcher(10, 10_000, 5.0, 50_000, suppressed=lambda: current)
    b.assign("t", 0, 0)
    # an identify: its identifies row and its users row share the message id
    profile = TableRow("web", "users", Kind.MERGE, {"id": "u1"}, None, "m0")
    b.add("t", 0, 0, [user_row(0, "u1", "a1", "identifies"), profile], 10, now=0.0)
    b.add("t", 0, 1, [user_row(1, "u2")], 10, now=0.0)
    b.add("t", 0, 2, [user_row(2, None, "a1")], 10, now=0.0)
    current = {"u1", "a1"}  # `forget` published: the reader replaced its set
    batch = b.take()
    assert batch is not None
    assert [r.message_id for r in batch.rows] == ["m1"]
    assert batch.moves() == [("t", 0, 0, 3)]  # consumed, not loaded
    assert batch.records == 3 and batch.suppressed == {"t": 2}


def test_a_suppressed_row_without_a_message_id_takes_no_other_row_with_it() -> None:
    current: set[str] = set()
    b = Batcher(10, 10_000, 5.0, 50_000, suppressed=lambda: current)
    b.assign("t", 0, 0)
    gone = TableRow("web", "identity_map", Kind.REPLACE, {"identifier": "a1"}, None, "")
    kept = TableRow("web", "identity_map", Kind.REPLACE, {"identifier": "a2"}, None, "")
    b.add("t", 0, 0, [gone], 10, now=0.0)
    b.add("t", 0, 1, [kept], 10, now=0.0)
    current = {"a1"}
    batch = b.take()
    assert batch is not None
    assert batch.rows == [kept]
    assert batch.moves() == [("t", 0, 0, 2)]


class FakePrepared:
    def __init__(self) -> None:
        self.discarded = False

    def discard(self) -> None:
        self.discarded = True


def test_a_batch_prepared_ahead_is_filtered_again_when_the_list_changed_since() -> None:
    current: frozenset[str] = frozenset({"nobody"})
    b = Batcher(10, 10_000, 5.0, 50_000, suppressed=lambda: current)
    b.assign("t", 0, 0)
    b.add("t", 0, 0, [user_row(0, "u1")], 10, now=0.0)
    b.add("t", 0, 1, [user_row(1, "u2")], 10, now=0.0)
    snapshot = b.peek(1.0)
    assert snapshot is not None and len(snapshot.batch.rows) == 2
    prepared = FakePrepared()
    snapshot.batch.prepared = prepared
    current = frozenset({"u1"})
    batch = b.take_snapshot(snapshot)
    assert batch is not None and [r.message_id for r in batch.rows] == ["m1"]
    assert prepared.discarded and batch.prepared is None  # staged with the dropped row
    assert batch.moves() == [("t", 0, 0, 2)]


def test_an_unchanged_list_keeps_the_preparation() -> None:
    current = frozenset({"u9"})
    b = Batcher(10, 10_000, 5.0, 50_000, suppressed=lambda: current)
    b.assign("t", 0, 0)
    b.add("t", 0, 0, [user_row(0, "u1")], 10, now=0.0)
    snapshot = b.peek(1.0)
    assert snapshot is not None
    prepared = FakePrepared()
    snapshot.batch.prepared = prepared
    batch = b.take_snapshot(snapshot)
    assert batch is not None and batch.prepared is prepared and not prepared.discarded


def test_a_buffers_age_counts_from_when_its_first_record_was_produced() -> None:
    b = batcher(flush_rows=1000)  # flush age 5 s
    b.assign("t", 0, -1)
    assert b.due_in(now=10.0) is None  # nothing buffered
    # produced 3 s before it was read: due 2 s after
    b.add("t", 0, 0, [row()], 1, now=10.0, born=7.0)
    assert b.due_in(now=10.0) == 2.0
    assert not b.ready(now=11.9)
    assert b.ready(now=12.0)
    assert b.due_in(now=13.0) == 0.0
    # a later record does not make the buffer younger
    b.add("t", 0, 1, [row()], 1, now=11.0, born=11.0)
    assert b.due_in(now=11.0) == 1.0

    # a timestamp ahead of the reader's clock (a producer's clock skewed) counts as read now
    b = batcher(flush_rows=1000)
    b.assign("t", 0, -1)
    b.add("t", 0, 0, [row()], 1, now=10.0, born=60.0)
    assert b.due_in(now=10.0) == 5.0
    assert not b.ready(now=14.9)


def test_the_oldest_buffer_of_all_partitions_says_when_a_flush_is_due() -> None:
    b = batcher(flush_rows=1000)
    for p in (0, 1):
        b.assign("t", p, -1)
    b.add("t", 0, 0, [row()], 1, now=4.0)
    b.add("t", 1, 0, [row(partition=1)], 1, now=2.0)
    assert b.due_in(now=4.0) == 3.0
    b.take({("t", 1)})
    assert b.due_in(now=4.0) == 5.0
