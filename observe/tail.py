"""`segflow tail`: events as they pass, one line each (or one JSON object each).

The reading is `observe.feed.LiveFeed`'s (partitions assigned directly, no group, nothing
committed; clean topics unless raw ones are asked for). This module holds what a terminal needs
on top: the line of an event (`event_line`, pure), its JSON form (`event_json`), and `follow`,
the loop that hands each new matching event to a printer until a limit or a stop.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from observe.feed import EventSummary, FeedFilter, LiveFeed
from schemas.errors import FatalError

# The property summary of a line: at most this many characters, each value cut to VALUE_CHARS.
PROPERTIES_CHARS = 80
VALUE_CHARS = 24
ID_CHARS = 24
# What a terminal is told before it shows raw topics.
RAW_WARNING = (
    "warning: reading the raw topics, which hold events as sent, before PII masking: what "
    "follows may contain personal data (emails, names, IP addresses); do not paste or keep it"
)


def _cut(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{…}" if value else "{}"
    if isinstance(value, list):
        return f"[{len(value)}]"
    if isinstance(value, str):
        return _cut(value, VALUE_CHARS)
    return _cut(json.dumps(value), VALUE_CHARS)


def property_summary(record: Mapping[str, Any] | None, limit: int = PROPERTIES_CHARS) -> str:
    """``key=value`` pairs of the event's properties (traits for identify and group), values
    shortened (objects ``{…}``, arrays ``[n]``), the whole cut to `limit`."""
    if not record:
        return ""
    bag = record.get("traits") if record.get("type") in ("identify", "group") else None
    bag = bag if isinstance(bag, Mapping) and bag else record.get("properties")
    if not isinstance(bag, Mapping):
        return ""
    return _cut(" ".join(f"{k}={_short(v)}" for k, v in bag.items()), limit)


def _ids(record: Mapping[str, Any] | None) -> str:
    if not record:
        return ""
    pairs = (("user", "userId"), ("anon", "anonymousId"), ("group", "groupId"))
    return " ".join(
        f"{label}={_cut(str(record[key]), ID_CHARS)}" for label, key in pairs if record.get(key)
    )


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]


def event_line(summary: EventSummary, record: Mapping[str, Any] | None) -> str:
    """``time  type  event/name  source  ids  properties``: aligned enough to scan by eye."""
    name = summary.event or "-"
    cells = [
        _time(summary.timestamp_ms),
        summary.call_type.ljust(8),
        _cut(name, 32).ljust(24),
        summary.source or "-",
        _ids(record),
        property_summary(record),
    ]
    return "  ".join(c for c in cells if c).rstrip()


def event_json(summary: EventSummary, record: Mapping[str, Any] | None) -> str:
    """One JSON line: where the record was read and the record itself (decoded)."""
    out = {
        "topic": summary.topic,
        "partition": summary.partition,
        "offset": summary.offset,
        "kafka_time": datetime.fromtimestamp(summary.timestamp_ms / 1000, tz=UTC).isoformat(),
        "record": record,
    }
    return json.dumps(out, default=str, ensure_ascii=False)


def follow(
    feed: LiveFeed,
    flt: FeedFilter,
    emit: Callable[[EventSummary, dict[str, Any] | None], None],
    *,
    limit: int | None = None,
    stop: threading.Event | None = None,
    poll_s: float = 0.2,
) -> int:
    """Run `feed` in a thread and `emit` each new event `flt` matches, oldest first, until
    `limit` events were emitted or `stop` is set; returns how many were emitted. The feed is
    stopped (its consumer closed) on the way out, whatever ends the loop; a feed that failed
    raises FatalError."""
    stop = stop or threading.Event()
    failed: list[BaseException] = []

    def read() -> None:
        try:
            feed.run()
        except Exception as exc:  # handed to the caller below
            failed.append(exc)

    reader = threading.Thread(target=read, name="tail-feed", daemon=True)
    reader.start()
    emitted, seen = 0, 0
    try:
        while not stop.is_set() and (limit is None or emitted < limit):
            if not reader.is_alive():
                break
            last = feed.events.last_seq
            for summary in feed.events.since(seen, flt, limit=feed.events.capacity):
                if summary.seq > last:  # arrived after `last` was read: the next round's
                    break
                emit(summary, feed.record(summary.seq))
                emitted += 1
                if limit is not None and emitted >= limit:
                    break
            seen = last
            stop.wait(poll_s)
    finally:
        feed.stop()
        reader.join(timeout=5)
    if failed:
        raise FatalError(f"the live feed stopped: {failed[0]}") from failed[0]
    return emitted
