"""The suppression reader asks again for offsets that are not known yet, within a bound."""

from __future__ import annotations

import logging
import threading
import time

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


def test_ready_only_while_the_reader_thread_follows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that loaded the list and then died (or was stopped) is not ready any more."""
    fail = threading.Event()

    def follow(self: SuppressionList, consumer: Consumer) -> None:
        self._ready.set()
        fail.wait(10)
        raise KafkaException("the broker went away")

    monkeypatch.setattr(SuppressionList, "_follow", follow)
    reader = SuppressionList(KafkaSettings(bootstrap="127.0.0.1:1")).start()
    try:
        assert reader.wait_ready(5)
        assert reader.ready and reader.alive
        fail.set()
        deadline = time.monotonic() + 5
        while reader.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.error is not None
        assert not reader.alive and not reader.ready
    finally:
        reader.stop()

    stopped = SuppressionList(KafkaSettings(bootstrap="127.0.0.1:1"))
    monkeypatch.setattr(SuppressionList, "_follow", lambda self, consumer: self._ready.set())
    stopped.start().stop()
    assert not stopped.ready
