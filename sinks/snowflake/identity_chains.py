"""Identity chains resolved in the warehouse: `identity_map` rows always name the final user.

The processors stitch one hop, partition by partition: identify X -> A lands in X's partition,
alias A -> B in A's, so nothing upstream can re-point X when A -> B arrives. The sink can: every
flush that loads identity links resolves the chains they touch, inside its transaction, so
`identity_map.canonical_user_id` is the identifier's final user once the flush commits.

The rules (pure functions here; `IdentityChains` runs them on the flush's connection):

- A *link* is an identity_map row whose identifier differs from its canonical user. Each
  identifier's *current link* is its newest one (by `linked_at`, then identifier type, then
  user: the same order the `identified_events` view reads it in, `views.py`); a row naming
  itself (``A -> A``, which the processors write for every user) links nothing.
- A user's *final user* is where its current links lead, at most `max_hops` links on. A chain
  that closes on itself (A -> B, then B -> A) ends at the target of the cycle's newest link:
  the user most recently aliased to wins, the older link is overruled (its row then names its
  own identifier). A chain longer than `max_hops` stops at the user `max_hops` links on
  (counted; the next flush touching the chain goes further).
- The flush re-points every row whose canonical user is not final, in one set-based UPDATE
  per chunk of users: so X -> A becomes X -> B when A -> B lands, and a new link X -> A where
  A already resolves to B is stored as X -> B. Rows are only re-pointed, never added: an
  identifier keeps one canonical user per row, and the processors' shared-device guard
  (`max_user_ids_per_anonymous_id`) still decides which links exist at all.

Two sink instances: each flush deletes the identity_map rows its links replace before its chain
step; Snowflake's DELETE and UPDATE statements hold locks that generally keep others on the same
table waiting until their transaction ends (docs.snowflake.com, "Transactions": resource
locking), and its statements read what was committed before they began (read committed), so a
chain step reads the links other instances committed before it. The `identified_events` view
looks each user up once more besides.

Which users are looked at: the identifiers and users of the flush's new links, then the users
their stored links lead to, round by round (at most `max_hops` rounds; usually two, the second
finding nothing): the map was final before the flush, so only chains through a new link can
have changed. Identifiers travel as one JSON array bind per statement (`dml.select_links`,
`dml.repoint_users`), so a flush of thousands of links is a few short statements.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from sinks.snowflake import dml
from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.tables import IDENTITY_MAP

logger = logging.getLogger(__name__)

DEFAULT_MAX_HOPS = 16
CHUNK = 5000
"""Identifiers (or user pairs) in one statement's JSON bind (well below 16 MB at the longest
identifiers the edge accepts)."""


@dataclass(frozen=True, slots=True)
class StoredLink:
    """One identity_map row that links an identifier to another user."""

    identifier: str
    identifier_type: str
    user_id: str
    linked_at: datetime | None


@dataclass
class Resolution:
    """Where each looked-at user ends: `remap` holds the users that must move (user -> final)."""

    remap: dict[str, str] = field(default_factory=dict)
    cycles: int = 0
    truncated: int = 0


def current_links(links: Iterable[StoredLink]) -> dict[str, StoredLink]:
    """Each identifier's newest link (rows naming their own identifier are no link)."""
    out: dict[str, StoredLink] = {}
    for link in links:
        if link.identifier == link.user_id:
            continue
        have = out.get(link.identifier)
        if have is None or _newer(link, have):
            out[link.identifier] = link
    return out


def _newer(a: StoredLink, b: StoredLink) -> bool:
    """a is newer than b: later linked_at (unknown is oldest), then the greater identifier
    type, then the greater user (`views.py` orders the same way)."""
    if a.linked_at is not None and b.linked_at is not None and a.linked_at != b.linked_at:
        return a.linked_at > b.linked_at
    if (a.linked_at is None) != (b.linked_at is None):
        return a.linked_at is not None
    return (a.identifier_type, a.user_id) > (b.identifier_type, b.user_id)


def final_user(
    start: str, current: Mapping[str, StoredLink], max_hops: int
) -> tuple[str, str | None]:
    """(the user `start` ends at, "cycle" / "truncated" / None for how the walk ended)."""
    path = [start]
    seen = {start: 0}
    node = start
    while True:
        link = current.get(node)
        if link is None:
            return node, None
        if len(path) > max_hops:  # max_hops links followed already
            return node, "truncated"
        nxt = link.user_id
        if nxt in seen:
            loop = [current[n] for n in path[seen[nxt] :]]
            newest = loop[0]
            for other in loop[1:]:
                if _newer(other, newest):
                    newest = other
            return newest.user_id, "cycle"
        seen[nxt] = len(path)
        path.append(nxt)
        node = nxt


def resolve(links: Iterable[StoredLink], starts: Iterable[str], max_hops: int) -> Resolution:
    """Final users of `starts` over `links` (see the module doc)."""
    current = current_links(links)
    out = Resolution()
    for start in dict.fromkeys(starts):
        final, how = final_user(start, current, max_hops)
        if how == "cycle":
            out.cycles += 1
        elif how == "truncated":
            out.truncated += 1
        if final != start:
            out.remap[start] = final
    return out


def unexplored(links: Iterable[StoredLink], asked: set[str]) -> list[str]:
    """Users the links lead to whose own links were not read yet."""
    return sorted({link.user_id for link in links} - asked)


def chunks(values: Sequence[Any], size: int = CHUNK) -> list[Sequence[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


class IdentityChains:
    """Resolves the chains a flush's new links touch, on the flush's connection (in its
    transaction: no DDL, no MERGE)."""

    def __init__(self, conn: SinkConnection, *, max_hops: int = DEFAULT_MAX_HOPS) -> None:
        self.conn = conn
        self.max_hops = max_hops

    def run(self, schema: str, new_links: Iterable[tuple[str, str]], load_ts: str) -> int:
        """Re-point schema's identity_map rows after the links (identifier, user) loaded;
        returns the rows re-pointed."""
        asked: set[str] = set()
        ask = sorted({v for pair in new_links for v in pair if v})
        links: list[StoredLink] = []
        rounds = 0
        while ask and rounds < self.max_hops:
            rounds += 1
            asked.update(ask)
            found = self._read(schema, ask)
            links += found
            ask = unexplored(found, asked)
        res = resolve(links, sorted(asked), self.max_hops)
        if res.cycles or res.truncated:
            logger.warning(
                "%s.%s: %d identity chains closed on themselves (the newest link won), %d longer "
                "than %d hops (resolved that far)",
                schema,
                IDENTITY_MAP,
                res.cycles,
                res.truncated,
                self.max_hops,
            )
        moved = 0
        pairs = sorted(res.remap.items())
        for part in chunks(pairs):
            binds = [load_ts, orjson.dumps(part).decode()]
            cur = self.conn.run(
                dml.repoint_users(schema), binds, kind="identity", table=IDENTITY_MAP
            )
            moved += int(cur.rowcount or 0)
        return moved

    def _read(self, schema: str, identifiers: Sequence[str]) -> list[StoredLink]:
        out: list[StoredLink] = []
        for part in chunks(identifiers):
            binds = [orjson.dumps(list(part)).decode()]
            cur = self.conn.run(
                dml.select_links(schema), binds, kind="identity", table=IDENTITY_MAP
            )
            for identifier, identifier_type, user_id, linked_at in cur.fetchall():
                out.append(
                    StoredLink(str(identifier), str(identifier_type), str(user_id), linked_at)
                )
        return out
