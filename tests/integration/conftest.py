"""Helpers of the integration tests: unique names, topics created through the AdminClient."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from runtime.services import emulator, kafka, kafka_cluster
from runtime.services.layout import ServicePaths

SESSION_TAG_ENV = "SEGFLOW_TEST_SESSION_TAG"  # tests/conftest.py sets it first
_SESSION_TAG = os.environ.setdefault(SESSION_TAG_ENV, uuid.uuid4().hex[:6])


def unique_name(prefix: str) -> str:
    """A name no other test (or earlier run) uses: topics, groups, tables, schemas.

    `<prefix>_<session tag, 6 hex><random, 6 hex>`: the session deletes the topics named with
    its tag at its end (tests/conftest.py), and only those."""
    return f"{prefix}_{_SESSION_TAG}{uuid.uuid4().hex[:6]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# a private emulator closes a session (rolling back its open transaction) after this long unused
IDLE_SESSION_TIMEOUT_S = 5.0


@contextmanager
def private_emulator(var_dir: Path) -> Iterator[int]:
    """An emulator of the test's own, closing sessions unused IDLE_SESSION_TIMEOUT_S: tests
    that SIGKILL warehouse clients mid-transaction need it, as Snowflake aborts the transactions
    of detached sessions (the shared emulator would hold their writes, and every later writer of
    the same rows would conflict, until it restarts). Yields its port."""
    port = free_port()
    emulator.start(port=port, var_dir=var_dir, idle_session_timeout_s=IDLE_SESSION_TIMEOUT_S)
    try:
        yield port
    finally:
        emulator.stop(var_dir=var_dir)


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_cluster.KafkaCluster]:
    """A private three-broker KRaft cluster (combined broker+controller nodes) on free ports,
    data in the session's temporary directory; stopped at the end of the session. The shared
    single broker is not touched. Prints its time to ready."""
    var_dir = tmp_path_factory.mktemp("kafka-cluster")
    nodes = tuple(
        kafka.Node(i, kafka.DEFAULT_HOST, free_port(), free_port(), f"kafka-{i}") for i in (1, 2, 3)
    )
    cluster = kafka_cluster.KafkaCluster(ServicePaths.at(None, var_dir), nodes)
    started = time.monotonic()
    try:
        cluster.start()
        kafka_cluster.wait_in_sync(cluster.bootstrap, len(nodes))
        print(f"three-broker cluster ready in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        cluster.stop()


def create_topic(bootstrap: str, name: str, partitions: int = 3, replication: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(name, num_partitions=partitions, replication_factor=replication)
    futures = admin.create_topics([new])
    futures[name].result(timeout=30)


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory: `new_topic(partitions=3)` creates a uniquely named topic, deleted after the test."""
    created: list[str] = []

    def make(partitions: int = 3) -> str:
        name = unique_name("test.services")
        create_topic(kafka_bootstrap, name, partitions)
        created.append(name)
        return name

    yield make
    if created:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)
