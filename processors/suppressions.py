"""Which raw events belong to a user on the suppression list (a user who asked to be forgotten).

Events of such users already in the raw topics, or replayed into them, must not reach the clean
topics, segment.identity or segment.schema-changes: the pipeline drops them before dedupe,
masking, stitching and drift, so they change no state either. The list itself is
``runtime.suppressions.SuppressionList``, loaded at the worker's start-up and followed while it
runs; this module holds the per-event decision, a few set lookups.

An event is suppressed when its userId, anonymousId or previousId (alias) is on the list, or when
the identity graph resolves it to a suppressed canonical userId (an anonymousId linked to the
user before the suppression and missing from its list of identifiers).
"""

from __future__ import annotations

from typing import Protocol

SUPPRESSED = "suppressed"


class SuppressionCheck(Protocol):
    """What the processors need of runtime.suppressions.SuppressionList."""

    def is_suppressed(self, user_id: object = None, anonymous_id: object = None) -> bool: ...

    def __len__(self) -> int: ...


def is_suppressed_event(
    check: SuppressionCheck,
    user_id: str | None,
    anonymous_id: str | None,
    previous_id: str | None,
    canonical_user_id: str | None,
) -> bool:
    """True when any identifier of the event, or the userId it resolves to, is suppressed."""
    if check.is_suppressed(user_id, anonymous_id):
        return True
    if previous_id is not None and check.is_suppressed(previous_id, None):
        return True
    return (
        canonical_user_id is not None
        and canonical_user_id != user_id
        and check.is_suppressed(canonical_user_id, None)
    )
