"""Which raw events belong to a user on the suppression list (a user who asked to be forgotten).

Events of such users already in the raw topics, or replayed into them, must not reach the clean
topics, segment.identity or segment.schema-changes: the pipeline drops them before dedupe,
masking, stitching and drift, so they change no state either. The list itself is
``runtime.suppressions.SuppressionList``, loaded at the worker's start-up and followed while it
runs; this module holds the per-event decision: four set lookups.

An event is suppressed when its userId, anonymousId or previousId (alias) is on the list, or when
the identity graph resolves it to a suppressed canonical userId (an anonymousId linked to the
user before the suppression and missing from its list of identifiers).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Protocol

SUPPRESSED = "suppressed"


class SuppressionCheck(Protocol):
    """What the processors need of runtime.suppressions.SuppressionList: the current set of
    suppressed identifiers (replaced on each change, never altered in place)."""

    @property
    def identifiers(self) -> AbstractSet[str]: ...


def is_suppressed_event(
    suppressed: AbstractSet[str],
    user_id: str | None,
    anonymous_id: str | None,
    previous_id: str | None,
    canonical_user_id: str | None,
) -> bool:
    """True when any identifier of the event, or the userId it resolves to, is suppressed."""
    return (
        user_id in suppressed
        or anonymous_id in suppressed
        or previous_id in suppressed
        or canonical_user_id in suppressed
    )
