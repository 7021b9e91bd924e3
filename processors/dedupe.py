"""Dedupe by messageId within a lookback, in bounded partition-local state.

Records are keyed by the most anonymous identifier, so every copy of an event (same messageId,
same identifiers) lands in the same partition and the check is local.

Bounds, and what happens at them:
- lookback (default 24 h): a messageId is remembered for ``lookback_s`` seconds of processing
  time after its first sighting; a copy arriving later passes as a new event.
- ``max_entries`` per partition: when a partition remembers that many messageIds, the oldest is
  forgotten (and counted as an eviction) before the lookback ends; a copy of a forgotten event
  passes as well. Size the limit to the events a partition sees in the lookback.
- ``max_bytes`` per partition: the same, counted in bytes of messageIds, so long ids cannot grow
  the state past it.
In both cases the warehouse load, which merges on ``id`` within its own lookback, is the second
line of defence; ``segflow_process_state_evictions_total`` shows how often the bound is hit.
"""

from __future__ import annotations

from processors.state import ChangelogWrite, PartitionedState

DEDUPE_TABLE = "dedupe"


class Deduper:
    """Remembers messageIds per partition for a lookback, up to a count."""

    def __init__(self, lookback_s: float, max_entries: int, max_bytes: int | None = None) -> None:
        self.state = PartitionedState(
            DEDUPE_TABLE, max_entries, ttl_s=lookback_s, max_bytes=max_bytes
        )

    def is_duplicate(self, partition: int, message_id: str, now: float) -> bool:
        return self.state.get(partition, message_id.encode(), now) is not None

    def remember(
        self, partition: int, message_id: str, now: float, writes: list[ChangelogWrite]
    ) -> None:
        self.state.put(partition, message_id.encode(), b"", now, writes)
