"""The suppression list on the real broker: publish, follow, lift."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from cli.commands.sink import suppression_reader
from ingest.server import build_app
from ingest.settings import IngestSettings
from runtime.health import HealthServer, HealthState
from runtime.rules import load_rules
from runtime.settings import KafkaSettings
from runtime.suppressions import SuppressionList, publish_suppressions
from runtime.topic_admin import create_topics, expected_topics
from sinks.snowflake.settings import SinkSettings
from tests.integration.conftest import unique_name

pytestmark = pytest.mark.integration


def _until(check: object, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_publish_follow_and_lift(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=f"{unique_name('supp')}.")
    create_topics(kafka, expected_topics(kafka.topics, partitions=1))
    publish_suppressions(kafka, {"user-1": ["anon-1", "anon-2"]}, reason="ticket-1")

    first = SuppressionList(kafka).start()
    try:
        assert first.wait_ready(20), first.error
        assert first.is_suppressed("user-1", None)
        assert first.is_suppressed(None, "anon-2")
        assert not first.is_suppressed("user-2", "anon-3")

        # a new entry reaches a running reader
        publish_suppressions(kafka, {"user-2": []})
        assert _until(lambda: first.is_suppressed("user-2"))

        # a tombstone lifts it
        publish_suppressions(kafka, {"user-1": []}, lift=True)
        assert _until(lambda: not first.is_suppressed(None, "anon-1"))
    finally:
        first.stop()

    # a reader started later sees the current state, not the history
    second = SuppressionList(kafka).start()
    try:
        assert second.wait_ready(20), second.error
        assert not second.is_suppressed("user-1")
        assert second.is_suppressed("user-2")
    finally:
        second.stop()


def test_empty_list_is_ready_at_once(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=f"{unique_name('supp')}.")
    create_topics(kafka, expected_topics(kafka.topics, partitions=1))
    reader = SuppressionList(kafka).start()
    try:
        assert reader.wait_ready(20), reader.error
        assert not reader.is_suppressed("anyone", "anything")
    finally:
        reader.stop()


def test_missing_topic_is_reported(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=f"{unique_name('supp')}.")
    reader = SuppressionList(kafka).start()
    try:
        assert _until(lambda: reader.error is not None)
        assert "segflow topics create" in str(reader.error)
        assert not reader.ready
    finally:
        reader.stop()


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_dead_reader_makes_the_sink_and_the_edge_not_ready(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=f"{unique_name('supp')}.")
    create_topics(kafka, expected_topics(kafka.topics, partitions=1))
    # the sink: its command's reader, its health server
    health = HealthState()
    health.set_ready(True, "consuming")
    server = HealthServer(CollectorRegistry(), health, "127.0.0.1", 0).start()
    reader = suppression_reader(SinkSettings(kafka=kafka), health)
    assert reader is not None
    try:
        assert _readyz(server.port) == 200
        reader.stop()  # the reader thread ends (as when it fails)
        assert _readyz(server.port) == 503
        assert health.readiness() == (False, "check suppressions failing")
    finally:
        reader.stop()
        server.stop()

    # the edge: its app's readiness check on the reader it manages
    app, _producer = build_app(IngestSettings(kafka=kafka), load_rules(None))
    edge_reader = app.suppressions
    assert isinstance(edge_reader, SuppressionList)
    edge_reader.start()
    try:
        assert edge_reader.wait_ready(20), edge_reader.error
        assert app.health.checks["suppressions"]()
        edge_reader.stop()
        assert not app.health.checks["suppressions"]()
    finally:
        edge_reader.stop()
