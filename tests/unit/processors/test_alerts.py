"""Schema-change alerts: rate limiting and message text."""

from __future__ import annotations

from typing import Any

from processors.alerts import AlertBatcher, describe


def change(field: str, kind: str = "new_property", prev: str | None = None) -> dict[str, Any]:
    return {
        "source": "web",
        "callType": "track",
        "event": "Signed Up",
        "field": field,
        "change": kind,
        "previousType": prev,
        "newType": "string",
    }


def test_describe_names_fields_and_types_only():
    assert (
        describe(change("properties.plan"))
        == "web.track 'Signed Up': properties.plan new property (string)"
    )
    assert "type number -> string" in describe(change("properties.x", "type_change", "number"))


def test_at_most_one_message_per_interval_with_a_summary():
    b = AlertBatcher(min_interval_s=60, max_lines=2)
    assert b.due(0.0) is None
    for i in range(5):
        b.add(change(f"properties.f{i}"))
    first = b.due(0.0)
    assert first is not None
    assert first["text"].startswith("segflow: 5 schema changes")
    assert "... and 3 more" in first["text"]
    b.add(change("properties.late"))
    assert b.due(30.0) is None
    later = b.due(61.0)
    assert later is not None and "properties.late" in later["text"]
    assert b.due(200.0) is None


def test_pending_is_bounded():
    b = AlertBatcher(min_interval_s=0, max_lines=1, max_pending=3)
    for i in range(10):
        b.add(change(f"properties.f{i}"))
    msg = b.due(0.0)
    assert msg is not None and msg["text"].startswith("segflow: 10 schema changes")


def test_alert_text_never_carries_pii_in_names():
    """Names arrive masked from the pipeline; a miss upstream is still redacted in the text."""
    leaky = change("properties.jo@x.org")
    leaky["event"] = "Called +1\u00a0415\u00a0555\u00a02671"
    text = describe(leaky)
    assert text == "web.track 'Called [redacted]': [redacted] new property (string)"
    b = AlertBatcher(min_interval_s=0)
    b.add(leaky)
    b.add(change("properties.card 4111 1111 1111 1111"))
    msg = b.due(0.0)
    assert msg is not None
    for secret in ("jo@x.org", "415", "2671", "4111"):
        assert secret not in msg["text"]
