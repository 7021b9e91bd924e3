"""`segflow replay` on the real broker: offset resets (plan, refusal, force) and range copies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from cli.main import main
from schemas.topics import HEADER_REPLAY, HEADER_SOURCE
from tests.integration.conftest import create_topic, unique_name

pytestmark = pytest.mark.integration

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Callable[[int], str]]:
    made: list[str] = []

    def make(partitions: int = 2) -> str:
        name = unique_name("test.replay")
        create_topic(kafka_bootstrap, name, partitions)
        made.append(name)
        return name

    yield make
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_topics(made).values():
        future.result(timeout=30)


def _produce(bootstrap: str, topic: str, count: int, partitions: int = 2) -> None:
    """`count` records, one a second from BASE, alternating partitions, with keys and headers."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(count):
        producer.produce(
            topic,
            key=f"anon-{i}".encode(),
            value=f"value-{i}".encode(),
            partition=i % partitions,
            timestamp=_ms(BASE + timedelta(seconds=i)),
            headers=[(HEADER_SOURCE, b"web")],
        )
    assert producer.flush(30) == 0


def _committed(bootstrap: str, group: str, topic: str, partitions: int = 2) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(partitions)]
    )
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=30)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def _consume_and_commit(bootstrap: str, group: str, topic: str, count: int) -> Consumer:
    """A live member of `group` that has read and committed `count` records."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 30
    while seen < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            seen += 1
    assert seen == count
    consumer.commit(asynchronous=False)
    return consumer


def test_reset_to_timestamp_plans_refuses_live_group_then_applies(
    kafka_bootstrap: str, topics: Callable[[int], str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = topics(2)
    group = unique_name("test.replay.group")
    _produce(kafka_bootstrap, topic, 20)
    consumer = _consume_and_commit(kafka_bootstrap, group, topic, 20)
    assert _committed(kafka_bootstrap, group, topic) == {0: 10, 1: 10}
    when = (BASE + timedelta(seconds=12)).isoformat()
    argv = ["replay", "reset", "--group", group, "--topic", topic, "--to-timestamp", when]
    argv += ["--kafka-bootstrap", kafka_bootstrap]

    # Records 12..19 are at or after the time: 4 on each partition, so offsets 6 and 6.
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 records to re-read" in out
    assert "dry run" in out
    assert _committed(kafka_bootstrap, group, topic) == {0: 10, 1: 10}

    # A live member: refused, nothing moved.
    assert main(argv) == 1
    assert "live member" in capsys.readouterr().err
    assert _committed(kafka_bootstrap, group, topic) == {0: 10, 1: 10}

    consumer.close()
    assert main(argv) == 0
    assert _committed(kafka_bootstrap, group, topic) == {0: 6, 1: 6}

    # An offset past the end is clamped to the log; one partition only.
    assert (
        main(
            [
                "replay",
                "reset",
                "--group",
                group,
                "--topic",
                f"{topic}:1",
                "--to-offset",
                "999",
                "--kafka-bootstrap",
                kafka_bootstrap,
            ]
        )
        == 0
    )
    assert "clamped" in capsys.readouterr().out
    assert _committed(kafka_bootstrap, group, topic) == {0: 6, 1: 10}


def test_force_waits_for_members_to_leave(
    kafka_bootstrap: str, topics: Callable[[int], str]
) -> None:
    topic = topics(2)
    group = unique_name("test.replay.group")
    _produce(kafka_bootstrap, topic, 6)
    consumer = _consume_and_commit(kafka_bootstrap, group, topic, 6)
    codes: list[int] = []
    worker = threading.Thread(
        target=lambda: codes.append(
            main(
                [
                    "replay",
                    "reset",
                    "--group",
                    group,
                    "--topic",
                    topic,
                    "--to-earliest",
                    "--force",
                    "--wait-s",
                    "30",
                    "--kafka-bootstrap",
                    kafka_bootstrap,
                ]
            )
        )
    )
    worker.start()
    # The reset is waiting; the operator's consumers shut down now.
    time.sleep(1.5)
    assert _committed(kafka_bootstrap, group, topic) == {0: 3, 1: 3}
    consumer.close()
    worker.join(timeout=45)
    assert codes == [0]
    assert _committed(kafka_bootstrap, group, topic) == {0: 0, 1: 0}


def _read_all(bootstrap: str, topic: str, expected: int) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("test.replay.reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + 30
    while len(out) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            out.append(msg)
    # Nothing beyond what was expected arrives.
    extra = consumer.poll(1.0)
    assert extra is None or extra.error() is not None
    consumer.close()
    return out


def test_copy_time_range_keeps_keys_headers_timestamps(
    kafka_bootstrap: str, topics: Callable[[int], str], capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = topics(2), topics(2)
    _produce(kafka_bootstrap, source, 30)
    start, end = BASE + timedelta(seconds=10), BASE + timedelta(seconds=20)
    argv = [
        "replay",
        "copy",
        "--from-topic",
        source,
        "--to-topic",
        dest,
        "--start",
        start.isoformat(),
        "--end",
        end.isoformat(),
        "--kafka-bootstrap",
        kafka_bootstrap,
    ]
    assert main([*argv, "--dry-run"]) == 0
    assert "up to 10 records" in capsys.readouterr().out

    assert main(argv) == 0
    assert "copied 10 records" in capsys.readouterr().out
    copied = _read_all(kafka_bootstrap, dest, 10)
    by_key = {(m.key() or b"").decode(): m for m in copied}
    assert sorted(by_key) == sorted(f"anon-{i}" for i in range(10, 20))
    for i in range(10, 20):
        msg = by_key[f"anon-{i}"]
        assert msg.value() == f"value-{i}".encode()
        assert msg.timestamp()[1] == _ms(BASE + timedelta(seconds=i))
        assert msg.partition() == i % 2
        headers = dict(msg.headers() or [])
        assert headers[HEADER_SOURCE] == b"web"
        assert headers[HEADER_REPLAY] == f"{source}[{i % 2}]@{i // 2}".encode()


def test_copy_into_itself_ends(kafka_bootstrap: str, topics: Callable[[int], str]) -> None:
    topic = topics(2)
    _produce(kafka_bootstrap, topic, 8)
    assert (
        main(
            [
                "replay",
                "copy",
                "--from-topic",
                topic,
                "--to-topic",
                topic,
                "--start",
                BASE.isoformat(),
                "--kafka-bootstrap",
                kafka_bootstrap,
            ]
        )
        == 0
    )
    records = _read_all(kafka_bootstrap, topic, 16)
    assert len(records) == 16
    assert sum(1 for m in records if HEADER_REPLAY in dict(m.headers() or [])) == 8
