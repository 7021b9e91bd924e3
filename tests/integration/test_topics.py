"""`segflow topics create|check` against the real broker."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from cli.main import main
from runtime.settings import KafkaSettings
from runtime.topic_admin import check_topics, expected_topics

pytestmark = pytest.mark.integration


def test_create_then_check_then_create_again(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    argv = ["--kafka-bootstrap", kafka_bootstrap, "--kafka-topic-prefix", prefix]
    assert main(["topics", "create", "--partitions", "3", *argv]) == 0
    assert "16 topics expected, 16 created" in capsys.readouterr().out
    assert main(["topics", "check", "--partitions", "3", *argv]) == 0
    assert "all 16 topics match" in capsys.readouterr().out
    # running it twice is harmless
    assert main(["topics", "create", "--partitions", "3", *argv]) == 0
    assert "0 created, 16 already there" in capsys.readouterr().out

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    identity = ConfigResource(ConfigResource.Type.TOPIC, f"{prefix}segment.identity")
    raw = ConfigResource(ConfigResource.Type.TOPIC, f"{prefix}segment.raw.track")
    configs = {r.name: f.result(10) for r, f in admin.describe_configs([identity, raw]).items()}
    assert configs[identity.name]["cleanup.policy"].value == "compact"
    assert int(configs[raw.name]["retention.ms"].value) == 3 * 24 * 3600 * 1000
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[f"{prefix}segment.events.page"].partitions) == 3


def test_check_reports_drift(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=prefix)
    argv = ["--kafka-bootstrap", kafka_bootstrap, "--kafka-topic-prefix", prefix]
    assert main(["topics", "create", "--partitions", "2", *argv]) == 0
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_topics([f"{prefix}segment.dlq"])[f"{prefix}segment.dlq"].result(10)
    specs = expected_topics(kafka.topics, partitions=3)
    deadline = time.monotonic() + 20
    problems = check_topics(kafka, specs)
    while f"{prefix}segment.dlq: missing" not in problems:  # deletion spreads to metadata
        assert time.monotonic() < deadline, problems
        time.sleep(0.1)
        problems = check_topics(kafka, specs)
    assert any(p.endswith("2 partitions, expected 3") for p in problems), problems
    capsys.readouterr()
    assert main(["topics", "check", "--partitions", "2", *argv]) == 1
    assert "segment.dlq: missing" in capsys.readouterr().out
