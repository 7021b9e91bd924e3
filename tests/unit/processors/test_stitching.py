"""Identity stitching: links, canonical ids, blocked values, the shared-device limit."""

from __future__ import annotations

from processors.state import ChangelogWrite
from processors.stitching import ANONYMOUS_ID, PREVIOUS_ID, USER_ID, IdentityGraph, Link
from runtime.rules import IdentityRules


def graph(limit: int = 5, max_entries: int = 100) -> IdentityGraph:
    return IdentityGraph(IdentityRules(max_user_ids_per_anonymous_id=limit), max_entries)


def identify(
    g: IdentityGraph, anon: str | None, user: str, writes: list[ChangelogWrite] | None = None
):
    return g.stitch(
        "identify", anon or user, anon, user, None, 0, 1.0, writes if writes is not None else []
    )


def test_identify_links_anonymous_id_and_later_events_resolve():
    g = graph()
    writes: list[ChangelogWrite] = []
    r = identify(g, "a1", "u1", writes)
    assert r.canonical_user_id == "u1"
    assert r.links == [Link("a1", ANONYMOUS_ID, "u1"), Link("u1", USER_ID, "u1")]
    assert [w.key for w in writes] == [b"a1"]
    track = g.stitch("track", "a1", "a1", None, None, 0, 2.0, [])
    assert track.canonical_user_id == "u1" and track.links == []
    # the same identify again makes no new link and writes nothing
    writes.clear()
    assert identify(g, "a1", "u1", writes).links == [] and writes == []


def test_state_is_partition_local():
    g = graph()
    identify(g, "a1", "u1")
    assert g.stitch("track", "a1", "a1", None, None, 1, 2.0, []).canonical_user_id is None


def test_event_user_id_wins_over_the_device_link():
    g = graph()
    identify(g, "a1", "u1")
    r = g.stitch("track", "a1", "a1", "u2", None, 0, 2.0, [])
    assert r.canonical_user_id == "u2"


def test_alias_links_previous_id_and_resolves_user_keyed_events():
    g = graph()
    r = g.stitch("alias", "old", None, "new", "old", 0, 1.0, [])
    assert r.links[0] == Link("old", PREVIOUS_ID, "new")
    assert r.canonical_user_id == "new"
    # an event whose key is the old userId resolves through the alias
    assert g.stitch("track", "old", None, "old", None, 0, 2.0, []).canonical_user_id == "new"


def test_identify_without_anonymous_id_records_the_user_once():
    g = graph()
    r = g.stitch("identify", "u1", None, "u1", None, 0, 1.0, [])
    assert r.links == [Link("u1", USER_ID, "u1")]
    assert g.stitch("identify", "u1", None, "u1", None, 0, 2.0, []).links == []


def test_blocked_values_never_link_case_insensitively():
    g = graph()
    for anon in ("undefined", " NULL ", "", "0", "-1", "anonymous"):
        r = identify(g, anon, "u1")
        assert all(link.identifier != anon for link in r.links)
    assert identify(g, "a1", "null").links == []
    assert identify(g, "a1", "null").canonical_user_id is None
    r = g.stitch("alias", "undefined", None, "u1", "undefined", 0, 1.0, [])
    assert r.links == [] and r.refused == "blocked"


def test_shared_device_is_not_merged_beyond_the_limit():
    g = graph(limit=3)
    results = [identify(g, "kiosk", f"u{i}") for i in range(5)]
    assert [bool(r.links) for r in results] == [True, True, True, False, False]
    assert [r.refused for r in results] == [None, None, None, "shared_device", "shared_device"]
    # a known user switching back is not a new merge
    back = identify(g, "kiosk", "u0")
    assert back.refused is None and back.links == [
        Link("kiosk", ANONYMOUS_ID, "u0"),
        Link("u0", USER_ID, "u0"),
    ]
    assert g.stitch("page", "kiosk", "kiosk", None, None, 0, 3.0, []).canonical_user_id == "u0"


def test_entries_are_bounded_per_partition():
    g = graph(max_entries=2)
    writes: list[ChangelogWrite] = []
    for i in range(3):
        identify(g, f"a{i}", f"u{i}", writes)
    assert len(g.state) == 2
    assert ChangelogWrite("identity", 0, b"a0", None) in writes  # tombstone of the oldest
    assert g.stitch("track", "a0", "a0", None, None, 0, 2.0, []).canonical_user_id is None
