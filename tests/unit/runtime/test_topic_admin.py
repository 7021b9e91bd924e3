"""The expected topic settings: retention by what a topic holds."""

from __future__ import annotations

from runtime.topic_admin import DAY_MS, expected_topics
from schemas.topics import Topics


def test_the_dlq_keeps_raw_records_only_as_long_as_the_raw_topics():
    """The processors copy raw bytes (raw PII) into the DLQ: it gets the raw retention."""
    topics = Topics("")
    specs = {s.name: s for s in expected_topics(topics)}
    raw = {specs[t].config["retention.ms"] for t in topics.all_raw()}
    assert raw == {str(3 * DAY_MS)}
    assert specs[topics.dlq].config["retention.ms"] == str(3 * DAY_MS)
    assert specs[topics.dlq].config["cleanup.policy"] == "delete"
    assert {specs[t].config["retention.ms"] for t in topics.all_clean()} == {str(14 * DAY_MS)}
    shorter = {s.name: s for s in expected_topics(topics, raw_retention_ms=DAY_MS)}
    assert shorter[topics.dlq].config["retention.ms"] == str(DAY_MS)
