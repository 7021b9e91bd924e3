"""The expected topic settings: retention by what a topic holds."""

from __future__ import annotations

import pytest

from runtime.topic_admin import DAY_MS, Replication, expected_topics, replication_for
from schemas.errors import FatalError
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


def test_replication_follows_the_cluster_unless_set():
    assert replication_for(1) == Replication(1, 1)  # the single local broker
    assert replication_for(2) == Replication(2, 1)
    assert replication_for(3) == Replication(3, 2)
    assert replication_for(5) == Replication(3, 2)
    assert replication_for(5, factor=5) == Replication(5, 4)
    assert replication_for(3, factor=3, min_insync=3) == Replication(3, 3)


def test_a_min_insync_above_the_factor_is_refused():
    with pytest.raises(FatalError, match=r"min\.insync\.replicas 3 exceeds"):
        replication_for(3, factor=2, min_insync=3)


def test_expected_topics_carry_the_replication_settings():
    specs = expected_topics(Topics(""), replication_factor=3, min_insync_replicas=2)
    assert {(s.replication_factor, s.min_insync_replicas) for s in specs} == {(3, 2)}
    assert {s.replication_factor for s in expected_topics(Topics(""))} == {None}
