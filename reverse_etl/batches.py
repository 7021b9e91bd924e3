"""Packing calls into /v1/batch requests within Segment's limits. Pure.

Segment accepts at most 500 KB and 2,500 events a batch request and 32 KB an event (JSON bytes
before compression). A call over the event limit is set aside (never sent, counted); the others
fill requests in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from reverse_etl.calls import RowCall

# {"batch":[],"sentAt":"2024-01-01T00:00:00.000Z"}: the envelope around the events.
ENVELOPE_BYTES = len(orjson.dumps({"batch": [], "sentAt": "2024-01-01T00:00:00.000Z"}))


@dataclass
class Batch:
    calls: list[RowCall] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    size: int = ENVELOPE_BYTES

    def body(self, sent_at: str) -> bytes:
        """The request body: the events as encoded, in order."""
        return (
            b'{"batch":[' + b",".join(self.encoded) + b'],"sentAt":' + orjson.dumps(sent_at) + b"}"
        )


@dataclass
class Packing:
    batches: list[Batch]
    oversized: list[RowCall]


def iter_batches(
    calls: Iterable[RowCall],
    *,
    max_events: int,
    max_bytes: int,
    max_event_bytes: int,
    oversized: list[RowCall] | None = None,
) -> Iterator[Batch]:
    """Batches of encoded calls; calls over `max_event_bytes` go to `oversized` instead."""
    current = Batch()
    for rc in calls:
        data = orjson.dumps(rc.call)
        if len(data) > max_event_bytes:
            if oversized is not None:
                oversized.append(rc)
            continue
        added = len(data) + (1 if current.encoded else 0)
        if current.encoded and (
            len(current.encoded) >= max_events or current.size + added > max_bytes
        ):
            yield current
            current = Batch()
            added = len(data)
        current.calls.append(rc)
        current.encoded.append(data)
        current.size += added
    if current.encoded:
        yield current


def pack(
    calls: Iterable[RowCall], *, max_events: int, max_bytes: int, max_event_bytes: int
) -> Packing:
    oversized: list[RowCall] = []
    batches = list(
        iter_batches(
            calls,
            max_events=max_events,
            max_bytes=max_bytes,
            max_event_bytes=max_event_bytes,
            oversized=oversized,
        )
    )
    return Packing(batches, oversized)
