"""Identity chains: final users through alias chains, cycles (the newest link wins), the hop
bound, and the flush's statements that re-point identity_map rows (against a spec'd fake of the
sink's connection that keeps an identity_map in memory)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import MagicMock, create_autospec

import orjson

from sinks.snowflake import dml
from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.identity_chains import (
    IdentityChains,
    StoredLink,
    current_links,
    final_user,
    resolve,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def link(identifier: str, user: str, minutes: int = 0, kind: str = "previous_id") -> StoredLink:
    return StoredLink(identifier, kind, user, T0 + timedelta(minutes=minutes))


def test_a_chain_resolves_every_user_on_it_to_its_end() -> None:
    links = [link("x", "a", 0, "anonymous_id"), link("a", "b", 1), link("b", "c", 2)]
    res = resolve(links, ["x", "a", "b", "c"], max_hops=16)
    assert res.remap == {"x": "c", "a": "c", "b": "c"}
    assert res.cycles == 0 and res.truncated == 0


def test_rows_naming_themselves_link_nothing_and_the_newest_link_of_an_identifier_counts() -> None:
    links = [
        link("a", "a", 5, "user_id"),  # the processors' row of every user
        link("x", "a", 0, "anonymous_id"),
        link("x", "z", 3, "previous_id"),  # x aliased to z later: z wins for x
    ]
    current = current_links(links)
    assert set(current) == {"x"} and current["x"].user_id == "z"
    assert resolve(links, ["x", "a"], 16).remap == {"x": "z"}


def test_an_unknown_link_time_is_older_than_any_known_one() -> None:
    older = StoredLink("x", "previous_id", "old", None)
    assert current_links([older, link("x", "new", 0)])["x"].user_id == "new"
    assert current_links([link("x", "new", 0), older])["x"].user_id == "new"


def test_a_cycle_ends_at_the_target_of_its_newest_link() -> None:
    # a -> b first, then b -> a: b was merged into a last, so a is the user of both
    links = [link("a", "b", 1), link("b", "a", 2), link("x", "b", 0, "anonymous_id")]
    res = resolve(links, ["a", "b", "x"], 16)
    assert res.remap == {"b": "a", "x": "a"}
    assert res.cycles == 3  # every walk met the cycle, none looped
    # a three-link cycle: the newest link (c -> a) names the winner wherever the walk starts
    ring = [link("a", "b", 2), link("b", "c", 1), link("c", "a", 3)]
    assert {final_user(s, current_links(ring), 16)[0] for s in "abc"} == {"a"}


def test_the_hop_bound_stops_a_long_chain_where_it_is_reached() -> None:
    chain = [link(f"u{i}", f"u{i + 1}", i) for i in range(10)]
    current = current_links(chain)
    assert final_user("u0", current, 3) == ("u3", "truncated")
    assert final_user("u7", current, 3) == ("u10", None)  # exactly three links: not cut
    res = resolve(chain, ["u0"], 3)
    assert res.remap == {"u0": "u3"} and res.truncated == 1


def test_resolution_only_re_points_users_it_never_adds_a_link() -> None:
    """Fan-in is what an alias means (many identifiers, one user); fan-out cannot happen: the
    result maps each user to one final user, and only users that had a link move."""
    links = [link(f"anon-{i}", "a", i, "anonymous_id") for i in range(50)] + [link("a", "b", 99)]
    res = resolve(links, ["a", "b"] + [f"anon-{i}" for i in range(50)], 16)
    assert res.remap["a"] == "b"
    assert set(res.remap) == {"a"} | {f"anon-{i}" for i in range(50)}
    assert set(res.remap.values()) == {"b"}
    assert "b" not in res.remap  # the end of the chain has no link: it stays


# -- the statements ---------------------------------------------------------------------------


def test_the_statements_are_set_based_with_the_values_in_one_json_bind() -> None:
    sql = dml.select_links("web")
    assert sql.count("?") == 1 and 'FROM "WEB"."IDENTITY_MAP"' in sql
    assert "IN (SELECT f.value::VARCHAR FROM TABLE(FLATTEN(INPUT => PARSE_JSON(?))) f)" in sql
    assert '"CANONICAL_USER_ID" <> "IDENTIFIER"' in sql
    update = dml.repoint_users("web")
    assert update.startswith('UPDATE "WEB"."IDENTITY_MAP" t SET "CANONICAL_USER_ID" = m.')
    assert 'f.value[0]::VARCHAR AS "USER_ID", f.value[1]::VARCHAR AS "FINAL_USER_ID"' in update
    assert update.count("?") == 2  # the load time, the pairs
    assert 'WHERE t."CANONICAL_USER_ID" = m."USER_ID"' in update
    assert "MERGE" not in update  # the emulator cannot MERGE in a transaction


class MemoryMap:
    """identity_map rows (identifier, type, user, linked_at) answering the two statements."""

    def __init__(self, rows: list[tuple[str, str, str, datetime]]) -> None:
        self.rows: list[list[Any]] = [list(r) for r in rows]
        self.statements: list[str] = []

    def run(self, sql: str, binds: Sequence[Any] = (), **_: Any) -> Any:
        self.statements.append(sql.split()[0])
        cur = MagicMock()
        if sql.startswith("SELECT"):
            assert sql == dml.select_links("web") and len(binds) == 1
            asked = set(orjson.loads(binds[0]))
            cur.fetchall.return_value = [
                tuple(r) for r in self.rows if r[0] in asked and r[2] != r[0]
            ]
        else:
            assert sql == dml.repoint_users("web") and len(binds) == 2
            remap = dict(orjson.loads(binds[1]))
            moved = [r for r in self.rows if r[2] in remap]
            for r in moved:
                r[2] = remap[r[2]]
            cur.rowcount = len(moved)
        return cur

    def user_of(self, identifier: str, kind: str) -> str:
        return str(next(r[2] for r in self.rows if r[0] == identifier and r[1] == kind))


def chains_on(memory: MemoryMap, max_hops: int = 16) -> IdentityChains:
    conn = create_autospec(SinkConnection, instance=True)
    conn.run.side_effect = memory.run
    return IdentityChains(conn, max_hops=max_hops)


def test_an_alias_re_points_rows_loaded_before_it() -> None:
    """x -> a was loaded by an earlier flush; this flush loads a -> b (and b's own row)."""
    memory = MemoryMap(
        [
            ("x", "anonymous_id", "a", T0),
            ("a", "user_id", "a", T0),
            ("a", "previous_id", "b", T0 + timedelta(minutes=1)),
            ("b", "user_id", "b", T0 + timedelta(minutes=1)),
        ]
    )
    moved = chains_on(memory).run("web", [("a", "b"), ("b", "b")], "2026-01-02T00:00:00+00:00")
    assert moved == 2
    assert memory.user_of("x", "anonymous_id") == "b"
    assert memory.user_of("a", "user_id") == "b"
    # the links of the new links' identifiers and users (b has none: no second round); one UPDATE
    assert memory.statements == ["SELECT", "UPDATE"]


def test_a_new_link_to_a_user_that_resolves_on_is_stored_to_the_final_user() -> None:
    memory = MemoryMap(
        [
            ("a", "previous_id", "b", T0),
            ("b", "previous_id", "c", T0 + timedelta(minutes=1)),
            ("y", "anonymous_id", "a", T0 + timedelta(minutes=2)),  # this flush's link
        ]
    )
    chains_on(memory).run("web", [("y", "a")], "2026-01-02T00:00:00+00:00")
    assert memory.user_of("y", "anonymous_id") == "c"
    assert memory.user_of("a", "previous_id") == "c"  # a map written before chains: healed


def test_a_flush_whose_links_end_where_they_point_moves_nothing() -> None:
    memory = MemoryMap([("x", "anonymous_id", "a", T0), ("a", "user_id", "a", T0)])
    assert chains_on(memory).run("web", [("x", "a"), ("a", "a")], "t") == 0
    assert memory.user_of("x", "anonymous_id") == "a" and memory.user_of("a", "user_id") == "a"
    assert memory.statements == ["SELECT", "UPDATE"]
    memory.statements.clear()
    assert chains_on(memory).run("web", [("a", "a")], "t") == 0  # a user's own row alone
    assert memory.statements == ["SELECT"]


def test_the_rounds_of_reads_stop_at_the_hop_bound() -> None:
    rows = [(f"u{i}", "previous_id", f"u{i + 1}", T0 + timedelta(minutes=i)) for i in range(40)]
    memory = MemoryMap(rows)
    chains_on(memory, max_hops=4).run("web", [("u0", "u1")], "t")
    assert memory.statements.count("SELECT") == 4
    # u0's row named u1, which is followed four links on (the rest: a later flush)
    assert memory.user_of("u0", "previous_id") == "u5"
    assert memory.user_of("u9", "previous_id") == "u10"  # beyond the reads: untouched
