from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.timestamps import corrected_timestamp, parse_timestamp, to_iso


def test_clock_skew_correction() -> None:
    received = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    # the client's clock runs 1 hour fast; the event happened 10 s before the batch was sent
    sent = received + timedelta(hours=1)
    original = sent - timedelta(seconds=10)
    assert corrected_timestamp(received, sent, original) == received - timedelta(seconds=10)


def test_without_client_times() -> None:
    received = datetime(2026, 1, 1, tzinfo=UTC)
    original = received - timedelta(minutes=3)
    assert corrected_timestamp(received, None, None) == received
    assert corrected_timestamp(received, None, original) == original


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T10:00:00Z", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("2026-01-01T12:00:00+02:00", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("2026-01-01T10:00:00.5", datetime(2026, 1, 1, 10, 0, 0, 500000, tzinfo=UTC)),
        (None, None),
    ],
)
def test_parse_timestamp(text: str | None, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


def test_parse_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")
    with pytest.raises(ValueError):
        parse_timestamp(12)


def test_iso_output() -> None:
    assert to_iso(datetime(2026, 1, 1, 10, tzinfo=UTC)) == "2026-01-01T10:00:00.000Z"
