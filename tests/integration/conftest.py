"""Helpers of the integration tests: unique names, topics created through the AdminClient."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from runtime.services import emulator


def unique_name(prefix: str) -> str:
    """A name no other test (or earlier run) uses: topics, groups, tables, schemas."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


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


def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
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
