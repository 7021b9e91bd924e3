"""`segflow topics create|check` against the real broker."""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from cli.main import main
from runtime.services.kafka_cluster import KafkaCluster
from runtime.settings import KafkaSettings
from runtime.topic_admin import check_topics, expected_topics
from tests.integration.conftest import unique_name

pytestmark = pytest.mark.integration


def test_create_then_check_then_create_again(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = unique_name("t") + "."
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
    prefix = unique_name("t") + "."
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


def test_single_broker_topics_keep_one_replica(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = unique_name("t") + "."
    argv = ["--kafka-bootstrap", kafka_bootstrap, "--kafka-topic-prefix", prefix]
    assert main(["topics", "create", "--partitions", "1", *argv]) == 0
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    meta = admin.list_topics(timeout=10).topics[f"{prefix}segment.raw.track"]
    assert [len(p.replicas) for p in meta.partitions.values()] == [1]
    capsys.readouterr()
    # a topic whose replication differs from the expected is reported
    assert (
        main(
            [
                "topics",
                "check",
                "--partitions",
                "1",
                "--topics-min-insync-replicas",
                "2",
                "--topics-replication-factor",
                "2",
                *argv,
            ]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert f"{prefix}segment.raw.track: replication factor 1, expected 2" in out
    assert f"{prefix}segment.raw.track: min.insync.replicas=1, expected 2" in out


@pytest.mark.cluster
@pytest.mark.slow
def test_cluster_topics_get_three_replicas_two_in_sync(
    local_cluster: KafkaCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap = local_cluster.bootstrap
    prefix = unique_name("t") + "."
    argv = ["--kafka-bootstrap", bootstrap, "--kafka-topic-prefix", prefix]
    assert main(["topics", "create", "--partitions", "2", *argv]) == 0
    assert main(["topics", "check", "--partitions", "2", *argv]) == 0
    assert "all 16 topics match" in capsys.readouterr().out
    admin = AdminClient({"bootstrap.servers": bootstrap})
    raw = f"{prefix}segment.raw.track"
    meta = admin.list_topics(timeout=10).topics[raw]
    assert [len(p.replicas) for p in meta.partitions.values()] == [3, 3]
    config = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, raw)])
    assert next(iter(config.values())).result(10)["min.insync.replicas"].value == "2"
    # expecting one replica, as on the single broker: every topic is reported
    assert (
        main(["topics", "check", "--partitions", "2", "--topics-replication-factor", "1", *argv])
        == 1
    )
    assert f"{raw}: replication factor 3, expected 1" in capsys.readouterr().out
