"""Segment's timestamp rules, as pure functions on timezone-aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(value: object) -> datetime | None:
    """Parse an ISO-8601 string (or pass a datetime through) into an aware UTC datetime.

    Naive values are taken as UTC. Returns None for None/empty; raises ValueError otherwise.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    else:
        raise ValueError(f"not a timestamp: {type(value).__name__}")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def corrected_timestamp(
    received_at: datetime, sent_at: datetime | None, original_timestamp: datetime | None
) -> datetime:
    """Segment's clock-skew correction: timestamp = receivedAt - (sentAt - originalTimestamp).

    Without both client times the event time is the client's timestamp if given, else receivedAt.
    """
    if original_timestamp is None:
        return received_at
    if sent_at is None:
        return original_timestamp
    return received_at - (sent_at - original_timestamp)


def to_iso(dt: datetime | None) -> str | None:
    """ISO-8601 with millisecond precision and a Z, as Segment writes timestamps."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
