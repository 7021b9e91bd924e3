"""Bounded partition-local state, the dedupe built on it, and changelog round trips."""

from __future__ import annotations

from processors.dedupe import Deduper
from processors.state import (
    ChangelogWrite,
    Journal,
    PartitionedState,
    decode_entry,
    encode_entry,
)


def test_entry_encoding_round_trip():
    assert decode_entry(encode_entry(12.5, b"v")) == (12.5, b"v")


def test_put_writes_changelog_and_evicts_oldest_at_the_bound():
    s = PartitionedState("t", max_entries=2)
    writes: list[ChangelogWrite] = []
    for i, k in enumerate([b"a", b"b", b"a", b"c"]):
        s.put(0, k, b"x", float(i), writes)
    # "a" was rewritten after "b", so "b" is the least recent and goes
    assert s.get(0, b"b") is None and s.get(0, b"a") == b"x" and s.get(0, b"c") == b"x"
    assert writes[-1] == ChangelogWrite("t", 0, b"b", None)
    assert s.evictions["max_entries"] == 1


def test_ttl_expiry_tombstones_old_entries():
    s = PartitionedState("t", max_entries=10, ttl_s=10)
    writes: list[ChangelogWrite] = []
    s.put(0, b"old", b"", 0.0, writes)
    s.put(0, b"new", b"", 5.0, writes)
    assert s.get(0, b"old", now=11.0) is None  # expired even before the sweep
    s.put(0, b"newer", b"", 11.0, writes)
    assert ChangelogWrite("t", 0, b"old", None) in writes
    assert s.get(0, b"new", now=11.0) == b"" and s.evictions["expired"] == 1


def test_load_rebuilds_a_partition_in_write_order_within_the_bound():
    s = PartitionedState("t", max_entries=2)
    items = [
        (b"c", encode_entry(3.0, b"3")),
        (b"a", encode_entry(1.0, b"1")),
        (b"b", encode_entry(2.0, b"2")),
        (b"bad", b"x"),
    ]
    assert s.load(4, items) == 2
    assert s.get(4, b"a") is None and s.get(4, b"c") == b"3"
    s.load_one(4, b"d", encode_entry(4.0, b"4"))
    assert s.get(4, b"b") is None and len(s) == 2
    s.drop_partition(4)
    assert len(s) == 0


def test_dedupe_within_lookback_and_per_partition():
    d = Deduper(lookback_s=60, max_entries=1000)
    writes: list[ChangelogWrite] = []
    assert not d.is_duplicate(0, "m1", 0.0)
    d.remember(0, "m1", 0.0, writes)
    assert d.is_duplicate(0, "m1", 30.0)
    assert not d.is_duplicate(1, "m1", 30.0)
    assert not d.is_duplicate(0, "m1", 61.0)  # past the lookback a copy passes
    assert writes == [ChangelogWrite("dedupe", 0, b"m1", encode_entry(0.0, b""))]


def test_a_flood_of_long_identifiers_cannot_grow_the_identity_state_past_its_byte_bound():
    from processors.stitching import IdentityGraph
    from runtime.rules import IdentityRules

    graph = IdentityGraph(IdentityRules(), max_entries=1_000_000, max_bytes=64 * 1024)
    writes: list[ChangelogWrite] = []
    for i in range(2_000):
        anonymous_id = f"{i:06d}" + "x" * 2_000
        graph.stitch("identify", anonymous_id, anonymous_id, f"user-{i}", None, 0, i, writes)
        assert graph.state.nbytes() <= 64 * 1024
    assert graph.state.evictions["max_bytes"] > 1_900
    assert graph.state.evictions["max_entries"] == 0
    # evicted as the entry bound does: the least recent go, each with its tombstone
    newest = f"{1999:06d}" + "x" * 2_000
    assert graph.resolve(newest, newest, None, 0) == "user-1999"
    oldest = f"{0:06d}" + "x" * 2_000
    assert graph.resolve(oldest, oldest, None, 0) is None
    assert ChangelogWrite("identity", 0, oldest.encode(), None) in writes


def test_dedupe_is_bounded_by_bytes_and_a_reload_keeps_the_newest_within_the_bound():
    d = Deduper(lookback_s=3600, max_entries=1_000_000, max_bytes=10_000)
    writes: list[ChangelogWrite] = []
    for i in range(500):
        d.remember(3, f"{i:04d}" + "m" * 96, float(i), writes)
    assert d.state.nbytes() <= 10_000 and len(d.state) == 100
    items = [(w.key, w.value) for w in writes if w.value is not None]
    s = PartitionedState("dedupe", max_entries=1_000_000, max_bytes=10_000)
    assert s.load(3, items) == 100 and s.nbytes() <= 10_000
    assert s.get(3, (f"{499:04d}" + "m" * 96).encode()) == b""
    assert s.get(3, (f"{399:04d}" + "m" * 96).encode()) is None


def test_rollback_undoes_a_partitions_puts_overwrites_and_evictions_only():
    s = PartitionedState("t", max_entries=2)
    writes: list[ChangelogWrite] = []
    s.put(0, b"a", b"1", 1.0, writes)
    s.put(0, b"b", b"2", 2.0, writes)
    s.put(1, b"z", b"9", 2.0, writes)
    before = {p: list(s._parts[p].items()) for p in (0, 1)}
    s.journal = journal = Journal()
    s.put(0, b"b", b"2'", 3.0, writes)  # overwrite
    s.put(0, b"c", b"3", 4.0, writes)  # evicts a
    s.put(0, b"d", b"4", 5.0, writes)  # evicts b
    s.put(1, b"y", b"8", 5.0, writes)
    s.journal = None
    assert s.rollback(0, journal) == 5
    assert list(s._parts[0].items()) == before[0]
    assert s.nbytes() == sum(len(k) + len(v) for p in (0, 1) for k, (_, v) in s._parts[p].items())
    assert s.get(1, b"y") == b"8"  # another partition's changes stay
