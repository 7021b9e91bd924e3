"""The DLQ view: entries with their reason and origin, and the replay command per origin topic.

A DLQ record says where it was read (origin topic, partition, offset) but not when that record
was written; it was written before it was dead-lettered, usually moments before. So the range
suggested for `segflow replay copy` starts `margin_s` before the first DLQ entry of a topic and
ends one second after its last: it may copy a few good records too, which the processors and
the sink drop as duplicates (they deduplicate by messageId).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from observe.feed import DlqSummary


@dataclass(frozen=True)
class ReplayRange:
    """What `segflow replay copy` needs to re-drive one origin topic's dead-lettered records."""

    topic: str
    entries: int
    partitions: tuple[int, ...]
    first_offset: int
    last_offset: int
    start: datetime
    end: datetime

    @property
    def command(self) -> str:
        topic = shlex.quote(self.topic)
        return (
            f"segflow replay copy --from-topic {topic} --to-topic {topic} "
            f"--start={_iso(self.start)} --end={_iso(self.end)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "entries": self.entries,
            "partitions": list(self.partitions),
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "command": self.command,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def replay_ranges(entries: Iterable[DlqSummary], margin_s: float) -> list[ReplayRange]:
    """One range per origin topic of `entries` (entries without an origin are left out)."""
    by_topic: dict[str, list[DlqSummary]] = {}
    for entry in entries:
        if entry.origin_topic and entry.timestamp_ms >= 0:
            by_topic.setdefault(entry.origin_topic, []).append(entry)
    out = []
    for topic, items in sorted(by_topic.items()):
        first = min(e.timestamp_ms for e in items)
        last = max(e.timestamp_ms for e in items)
        start = datetime.fromtimestamp(first / 1000, UTC) - timedelta(seconds=margin_s)
        # --end is exclusive and whole seconds: one second past the last entry, rounded down
        end = datetime.fromtimestamp(last // 1000 + 2, UTC)
        out.append(
            ReplayRange(
                topic=topic,
                entries=len(items),
                partitions=tuple(sorted({e.origin_partition for e in items})),
                first_offset=min(e.origin_offset for e in items),
                last_offset=max(e.origin_offset for e in items),
                start=start.replace(microsecond=0),
                end=end,
            )
        )
    return out
