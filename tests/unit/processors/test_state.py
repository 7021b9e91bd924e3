"""Bounded partition-local state, the dedupe built on it, and changelog round trips."""

from __future__ import annotations

from processors.dedupe import Deduper
from processors.state import ChangelogWrite, PartitionedState, decode_entry, encode_entry


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
