"""The local services work as the pipeline needs them: records through the broker (plain and
transactional, consumer groups), tables through the real Snowflake connector, and restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import snowflake.connector
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from runtime.services import emulator, kafka, kafka_cluster
from runtime.services.kafka_cluster import KafkaCluster
from tests.integration.conftest import create_topic, free_port, unique_name

pytestmark = pytest.mark.integration


def consume(
    bootstrap: str,
    topic: str,
    expected: int,
    *,
    timeout: float = 30.0,
    config: dict[str, Any] | None = None,
) -> list[Message]:
    """Read `expected` records of `topic` from the start (or fewer if the deadline passes)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("test-group"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **(config or {}),
        }
    )
    consumer.subscribe([topic])
    records: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                continue
            records.append(msg)
        if records:
            consumer.commit(asynchronous=False)  # the group coordinator stores offsets
            partitions = {p for m in records if (p := m.partition()) is not None}
            committed = consumer.committed(
                [TopicPartition(topic, p) for p in partitions], timeout=10
            )
            assert all(tp.offset >= 1 for tp in committed)
    finally:
        consumer.close()
    return records


def values_of(records: list[Message]) -> list[bytes]:
    values = [m.value() for m in records]
    return [v for v in values if isinstance(v, bytes)]


def produce(bootstrap: str, topic: str, values: list[bytes], **config: Any) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, **config}
    )
    for i, value in enumerate(values):
        producer.produce(topic, key=f"k{i}".encode(), value=value)
    assert producer.flush(30) == 0


def test_produce_and_consume(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=3)
    values = [f"event-{i}".encode() for i in range(20)]
    produce(kafka_bootstrap, topic, values)

    records = consume(kafka_bootstrap, topic, len(values))

    assert sorted(values_of(records)) == sorted(values)


def test_transactions_commit_and_abort(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=2)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_name("test-tx")}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"a", value=b"aborted")
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, key=f"k{i}".encode(), value=f"committed-{i}".encode())
    producer.commit_transaction(30)

    records = consume(kafka_bootstrap, topic, 5, config={"isolation.level": "read_committed"})

    assert sorted(values_of(records)) == [f"committed-{i}".encode() for i in range(5)]


def test_warehouse_roundtrip(warehouse_conn_params: dict[str, Any]) -> None:
    schema = unique_name("services")
    with (
        snowflake.connector.connect(
            **warehouse_conn_params, database="SEGFLOW_TEST", schema=schema
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE TABLE events (id VARCHAR, n INTEGER, props VARIANT)")
        cur.execute(
            "INSERT INTO events SELECT column1, column2, PARSE_JSON(column3) FROM VALUES "
            "('a', 1, '{\"plan\": \"pro\"}'), ('b', 2, '{\"plan\": \"free\"}')"
        )
        cur.execute("SELECT id, n, props:plan::string FROM events ORDER BY id")
        assert cur.fetchall() == [("a", 1, "pro"), ("b", 2, "free")]


def test_emulator_data_survives_restart_and_kill(tmp_path: Path) -> None:
    """A private emulator (own port and directory), so the shared one keeps its sessions."""
    port = free_port()
    params = emulator.conn_params(emulator.DEFAULT_HOST, port, database="KEEP", schema="S")
    assert emulator.start(var_dir=tmp_path, port=port) is True
    try:
        assert emulator.start(var_dir=tmp_path, port=port) is False  # already running
        st = emulator.status(var_dir=tmp_path, port=port)
        assert st.running and st.ready and st.managed and st.pid is not None
        with snowflake.connector.connect(**params) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id INTEGER)")
            cur.execute("INSERT INTO t VALUES (1), (2)")

        assert emulator.stop(var_dir=tmp_path) is True
        assert not emulator.status(var_dir=tmp_path, port=port).running
        assert emulator.start(var_dir=tmp_path, port=port) is True
        with snowflake.connector.connect(**params) as conn, conn.cursor() as cur:
            assert cur.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (2,)]  # type: ignore[union-attr]
            cur.execute("INSERT INTO t VALUES (3)")

        assert emulator.kill(var_dir=tmp_path) is True
        assert emulator.start(var_dir=tmp_path, port=port) is True
        with (
            snowflake.connector.connect(
                **emulator.conn_params(emulator.DEFAULT_HOST, port)
            ) as conn,
            conn.cursor() as cur,
        ):
            # the database is attached at start-up: fully qualified names work at once
            rows = cur.execute("SELECT id FROM KEEP.S.t ORDER BY id").fetchall()  # type: ignore[union-attr]
            assert rows == [(1,), (2,), (3,)]
    finally:
        emulator.stop(var_dir=tmp_path)
    assert (tmp_path / "warehouse" / "KEEP.db").exists()


def test_an_emulator_started_from_another_launcher_is_restarted(tmp_path: Path) -> None:
    """After an upgrade, the emulator left running runs the old launcher: start() replaces it."""
    port = free_port()
    assert emulator.start(var_dir=tmp_path, port=port) is True
    try:
        stamp = tmp_path / "run" / "emulator.launcher"
        first = emulator.status(var_dir=tmp_path, port=port).pid
        assert emulator.start(var_dir=tmp_path, port=port) is False  # same launcher: kept
        stamp.write_text("an older launcher\n")
        assert emulator.start(var_dir=tmp_path, port=port) is True
        st = emulator.status(var_dir=tmp_path, port=port)
        assert st.ready and st.pid != first
        assert stamp.read_text().strip() != "an older launcher"
    finally:
        emulator.stop(var_dir=tmp_path)


def test_emulator_checkpoints_between_requests_not_inside_them(tmp_path: Path) -> None:
    """The write-ahead log stays while requests keep coming and is written into the database
    file once the emulator has been idle; a kill after that loses nothing."""
    port = free_port()
    params = emulator.conn_params(emulator.DEFAULT_HOST, port, database="CK", schema="S")
    wal = tmp_path / "warehouse" / "CK.db.wal"
    assert emulator.start(var_dir=tmp_path, port=port) is True
    try:
        with snowflake.connector.connect(**params) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id INTEGER, s VARCHAR)")
            for _ in range(10):
                cur.execute(
                    "INSERT INTO t SELECT SEQ4(), REPEAT('x', 200)"
                    " FROM TABLE(GENERATOR(ROWCOUNT => 5000))"
                )
            assert wal.stat().st_size > 4_000_000
            busy_until = time.monotonic() + 3.0
            while time.monotonic() < busy_until:  # busy: a request every 0.3 s
                cur.execute("SELECT 1")
                time.sleep(0.3)
            assert wal.exists() and wal.stat().st_size > 4_000_000
        deadline = time.monotonic() + 15.0
        while wal.exists() and wal.stat().st_size > 4_000_000 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not wal.exists() or wal.stat().st_size < 1_000_000

        assert emulator.kill(var_dir=tmp_path) is True
        assert emulator.start(var_dir=tmp_path, port=port) is True
        with snowflake.connector.connect(**params) as conn, conn.cursor() as cur:
            assert cur.execute("SELECT COUNT(*) FROM t").fetchone() == (50_000,)  # type: ignore[union-attr]
    finally:
        emulator.stop(var_dir=tmp_path)


def test_status_sees_a_broker_we_did_not_start(kafka_bootstrap: str, tmp_path: Path) -> None:
    host, _, port = kafka_bootstrap.rpartition(":")
    st = kafka.status(var_dir=tmp_path, host=host, port=int(port))  # no pid file there
    assert st.running and st.ready and st.pid is None and not st.managed
    assert kafka.start(var_dir=tmp_path, host=host, port=int(port)) is False


@pytest.mark.slow
def test_private_broker_recovers_after_kill(tmp_path: Path) -> None:
    port, controller_port = free_port(), free_port()
    bootstrap = f"127.0.0.1:{port}"
    assert kafka.start(var_dir=tmp_path, port=port, controller_port=controller_port) is True
    try:
        st = kafka.status(var_dir=tmp_path, port=port)
        assert st.ready and st.managed and st.address == bootstrap
        topic = unique_name("test.recover")
        create_topic(bootstrap, topic, partitions=2)
        produce(bootstrap, topic, [f"before-{i}".encode() for i in range(10)])

        assert kafka.kill(var_dir=tmp_path) is True
        assert not kafka.status(var_dir=tmp_path, port=port).running
        assert kafka.start(var_dir=tmp_path, port=port, controller_port=controller_port) is True
        produce(bootstrap, topic, [b"after"])

        records = consume(bootstrap, topic, 11)
        assert len(records) == 11
    finally:
        kafka.stop(var_dir=tmp_path)
    assert not kafka.status(var_dir=tmp_path, port=port).running


@pytest.mark.cluster
@pytest.mark.slow
def test_cluster_nodes_stop_and_rejoin_in_sync(local_cluster: KafkaCluster) -> None:
    statuses = local_cluster.status()
    assert [s.name for s in statuses] == ["kafka-1", "kafka-2", "kafka-3"]
    assert all(s.ready and s.managed for s in statuses)
    assert len({s.address for s in statuses}) == 3
    topic = unique_name("test.cluster")
    create_topic(local_cluster.bootstrap, topic, partitions=3, replication=3)
    produce(local_cluster.bootstrap, topic, [f"before-{i}".encode() for i in range(10)])

    assert local_cluster.stop_node(2) is True
    assert not local_cluster.status()[1].running
    problems = kafka_cluster.out_of_sync(local_cluster.bootstrap, 3)
    assert "2 of 3 brokers registered" in problems
    produce(local_cluster.bootstrap, topic, [b"while-one-down"])  # 2 in sync: still writable

    assert local_cluster.start_node(2) is True
    kafka_cluster.wait_in_sync(local_cluster.bootstrap, 3, timeout=120)
    assert len(consume(local_cluster.bootstrap, topic, 11)) == 11
