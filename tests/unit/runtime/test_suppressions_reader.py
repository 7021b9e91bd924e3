"""The suppression reader asks again for offsets that are not known yet, within a bound."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from runtime import suppressions
from runtime.settings import KafkaSettings
from runtime.suppressions import SuppressionList


def test_offsets_asked_again_while_no_broker_answers_then_the_error_surfaces(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(suppressions, "WATERMARKS_TIMEOUT_S", 0.2)
    monkeypatch.setattr(suppressions, "WATERMARKS_RETRY_S", 1.0)
    monkeypatch.setattr(suppressions, "WATERMARKS_BACKOFF_S", 0.05)
    # nothing listens on port 1: the client's own errors (timed out, transport), which pass
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "unit"})
    reader = SuppressionList(KafkaSettings(bootstrap="127.0.0.1:1"))
    try:
        with (
            caplog.at_level(logging.INFO, logger="runtime.suppressions"),
            pytest.raises(KafkaException),
        ):
            reader._watermarks(consumer, TopicPartition("segment.suppressions", 0))
    finally:
        consumer.close()
    asked_again = [r for r in caplog.records if "asking again" in r.getMessage()]
    assert len(asked_again) >= 2


def test_a_stopped_reader_does_not_ask_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suppressions, "WATERMARKS_TIMEOUT_S", 0.2)
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "unit"})
    reader = SuppressionList(KafkaSettings(bootstrap="127.0.0.1:1"))
    reader._stop.set()
    try:
        with pytest.raises(KafkaException):
            reader._watermarks(consumer, TopicPartition("segment.suppressions", 0))
    finally:
        consumer.close()
