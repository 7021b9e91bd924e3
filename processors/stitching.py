"""Identity stitching: identify and alias calls build an identity graph, events get a canonical id.

Pure logic over partition-local state. A raw record's key is its most anonymous identifier
(alias: previousId; else anonymousId; else userId), so the graph entry of that identifier lives
in the event's own partition and every read and write here is local:

- identify(anonymousId A, userId U): links A -> U. An identify without an anonymousId records U
  itself (U -> U) so the identity map lists every user.
- alias(previousId P, userId U): links P -> U (P may be an anonymousId or an older userId).
- every event: ``canonical_user_id`` is the userId it carries, resolved through an alias when the
  userId is its key; an event without a userId resolves its anonymousId through the graph.

Ordering: call types travel in separate topics, so a track processed before the identify that
links its anonymousId carries no canonical id (or the previous one); the warehouse identity map,
fed from segment.identity, resolves such rows after the fact.

Chains are not followed here: identify X -> A keeps X's entry in X's partition, alias A -> B
lands in A's, so X's events keep resolving to A (events keyed by A itself do resolve to B, through
A's entry). Following an entry of another identifier would read another key's state, which is
only in this partition by the chance of hashing: results would then depend on the partition
count. The sink resolves chains in the warehouse instead (identity_map names each identifier's
final user; a source's identified_events view reads it), so ``canonical_user_id`` on a clean
event is the user as known when the event passed.

Guard rails: blocked values (empty, "null", "undefined", ... compared trimmed and lower-cased)
never link; an identifier already linked to ``max_user_ids`` distinct userIds (a shared device)
gets no further links (``refused="shared_device"``), its existing link stays.

State: one entry per identifier, ``{"c": canonical userId, "u": [userIds linked so far]}``, at
most ``max_entries`` per partition and ``max_bytes`` of identifiers and entries per partition (a
flood of long identifiers cannot grow it past that); at a bound the least recently written
identifier is forgotten (its events then resolve only through their own userId, and the
warehouse identity map, fed from segment.identity, still has the link).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from processors.state import ChangelogWrite, PartitionedState
from runtime.rules import IdentityRules

IDENTITY_TABLE = "identity"
#: the call types whose stitching may change the graph; any other call only resolves
LINKING_CALLS = frozenset({"identify", "alias"})
ANONYMOUS_ID = "anonymous_id"
PREVIOUS_ID = "previous_id"
USER_ID = "user_id"


@dataclass(frozen=True, slots=True)
class Link:
    identifier: str
    identifier_type: str
    canonical_user_id: str


@dataclass(slots=True)
class StitchResult:
    canonical_user_id: str | None
    links: list[Link] = field(default_factory=list)
    refused: str | None = None


@dataclass(slots=True)
class _Entry:
    canonical: str
    user_ids: list[str]

    def encode(self) -> bytes:
        return orjson.dumps({"c": self.canonical, "u": self.user_ids})

    @classmethod
    def decode(cls, data: bytes) -> _Entry:
        obj = orjson.loads(data)
        return cls(str(obj["c"]), [str(u) for u in obj.get("u", [])])


class IdentityGraph:
    """Links identifiers to userIds with the guard rails of the rules file."""

    def __init__(
        self, rules: IdentityRules, max_entries: int, max_bytes: int | None = None
    ) -> None:
        self.blocked = frozenset(v.strip().lower() for v in rules.blocked_values)
        self.max_user_ids = rules.max_user_ids_per_anonymous_id
        self.state = PartitionedState(IDENTITY_TABLE, max_entries, max_bytes=max_bytes)

    def usable(self, value: str | None) -> bool:
        """False for None and blocked values: they never link and never resolve."""
        return value is not None and value.strip().lower() not in self.blocked

    def _entry(self, partition: int, identifier: str) -> _Entry | None:
        data = self.state.get(partition, identifier.encode())
        return _Entry.decode(data) if data is not None else None

    def _link(
        self,
        partition: int,
        identifier: str,
        identifier_type: str,
        user_id: str,
        now: float,
        writes: list[ChangelogWrite],
        result: StitchResult,
    ) -> None:
        entry = self._entry(partition, identifier)
        if entry is None:
            entry = _Entry(user_id, [user_id])
        elif user_id in entry.user_ids:
            if entry.canonical == user_id:
                return
            entry.canonical = user_id
        elif len(entry.user_ids) >= self.max_user_ids:
            result.refused = "shared_device"
            return
        else:
            entry.user_ids.append(user_id)
            entry.canonical = user_id
        self.state.put(partition, identifier.encode(), entry.encode(), now, writes)
        result.links.append(Link(identifier, identifier_type, user_id))
        if identifier != user_id:
            result.links.append(Link(user_id, USER_ID, user_id))

    def stitch(
        self,
        call_type: str,
        key: str | None,
        anonymous_id: str | None,
        user_id: str | None,
        previous_id: str | None,
        partition: int,
        now: float,
        writes: list[ChangelogWrite],
    ) -> StitchResult:
        """Update the graph for one event and return its canonical userId and new links."""
        if call_type not in LINKING_CALLS:
            return StitchResult(self.resolve(key, anonymous_id, user_id, partition))
        result = StitchResult(canonical_user_id=None)
        user_ok = self.usable(user_id)
        if call_type == "identify" and user_ok:
            assert user_id is not None
            if self.usable(anonymous_id):
                assert anonymous_id is not None
                self._link(partition, anonymous_id, ANONYMOUS_ID, user_id, now, writes, result)
            elif key == user_id and self._entry(partition, user_id) is None:
                self._link(partition, user_id, USER_ID, user_id, now, writes, result)
        elif call_type == "alias":
            if user_ok and self.usable(previous_id) and previous_id != user_id:
                assert previous_id is not None and user_id is not None
                self._link(partition, previous_id, PREVIOUS_ID, user_id, now, writes, result)
            elif previous_id is not None or user_id is not None:
                result.refused = "blocked"
        result.canonical_user_id = self.resolve(key, anonymous_id, user_id, partition)
        return result

    def resolve(
        self, key: str | None, anonymous_id: str | None, user_id: str | None, partition: int
    ) -> str | None:
        """The canonical userId of an event (see the module doc)."""
        if self.usable(user_id):
            assert user_id is not None
            if key == user_id:
                entry = self._entry(partition, user_id)
                if entry is not None:
                    return entry.canonical
            return user_id
        if self.usable(anonymous_id):
            assert anonymous_id is not None
            entry = self._entry(partition, anonymous_id)
            if entry is not None:
                return entry.canonical
        return None
