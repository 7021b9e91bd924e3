"""Session fixtures shared by all tests: where the Kafka broker and the Snowflake emulator are.

Both are started through runtime.services when not reachable (and stopped again at the end
of the session if this session started them). Environment overrides:
SEGFLOW_KAFKA_BOOTSTRAP (an external broker), SEGFLOW_SNOWFLAKE_HOST / SEGFLOW_SNOWFLAKE_PORT.

Names the tests make (`unique_name`: topics, groups, app ids) carry this session's tag, so the
session deletes its own topics at the end and never those of another session on the broker.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from runtime.services import emulator, kafka

SESSION_TAG_ENV = "SEGFLOW_TEST_SESSION_TAG"
_TAGGED_WORKER_ENV = "SEGFLOW_TEST_SESSION_TAG_WORKER"


def _session_tag() -> str:
    """This session's tag, set once per pytest process (the environment carries it to every
    module that imports it). Each pytest-xdist worker is a session of its own: it deletes the
    topics it made at its end while the other workers still use theirs, so a worker does not
    keep the tag it inherited from the controller's environment."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is not None and os.environ.get(_TAGGED_WORKER_ENV) != worker:
        os.environ[_TAGGED_WORKER_ENV] = worker
        os.environ[SESSION_TAG_ENV] = uuid.uuid4().hex[:6]
    return os.environ.setdefault(SESSION_TAG_ENV, uuid.uuid4().hex[:6])


SESSION_TAG = _session_tag()


def is_session_topic(name: str, tag: str = SESSION_TAG) -> bool:
    """True for a topic named by `unique_name` in the session tagged `tag`."""
    # app ids spell the name with "-" (Faust's changelog topics are `<app id>-<table>-changelog`)
    return re.search(f"[_-]{re.escape(tag)}[0-9a-f]{{6}}", name) is not None


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a ready Kafka broker."""
    external = os.environ.get("SEGFLOW_KAFKA_BOOTSTRAP")
    if external:
        if not kafka.is_ready(external, timeout=10.0):
            pytest.fail(f"SEGFLOW_KAFKA_BOOTSTRAP={external} does not answer metadata requests")
        yield external
        return
    started = kafka.start()
    bootstrap = f"{kafka.DEFAULT_HOST}:{kafka.DEFAULT_PORT}"
    before = _topics(bootstrap)
    yield bootstrap
    if not os.environ.get("SEGFLOW_TEST_KEEP_TOPICS"):
        _delete_new_topics(bootstrap, before)
    if started:
        kafka.stop()


def _topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics)


def _delete_new_topics(bootstrap: str, before: set[str]) -> None:
    """Delete the topics this session made, so repeated runs do not pile partitions up on the
    local broker (each costs it file handles; ~20,000 partitions exhaust a 20,000 descriptor
    limit). Only those named with this session's tag: another session running beside this one
    keeps its topics. SEGFLOW_TEST_KEEP_TOPICS=1 keeps them all."""
    log = logging.getLogger(__name__)
    try:
        made = [t for t in _topics(bootstrap) - before if is_session_topic(t)]
        # the client must outlive the futures: destroyed, it fails them all with _DESTROY
        admin = AdminClient({"bootstrap.servers": bootstrap})
        futures = admin.delete_topics(made) if made else {}
    except Exception as exc:  # cleanup is best effort (a test may have left the broker down)
        log.warning("could not list or delete the test topics: %s", exc)
        return
    for name, future in futures.items():
        try:
            future.result(timeout=30)
        except Exception as exc:
            log.warning("could not delete test topic %s: %s", name, exc)


@pytest.fixture(scope="session")
def warehouse_conn_params() -> Iterator[dict[str, Any]]:
    """Keyword arguments of snowflake.connector.connect for the local emulator (no database)."""
    host = os.environ.get("SEGFLOW_SNOWFLAKE_HOST") or emulator.DEFAULT_HOST
    port = int(os.environ.get("SEGFLOW_SNOWFLAKE_PORT") or emulator.DEFAULT_PORT)
    started = False
    if not emulator.is_ready(host, port):
        if (host, port) != (emulator.DEFAULT_HOST, emulator.DEFAULT_PORT):
            pytest.fail(f"no Snowflake emulator answers on {host}:{port}")
        started = emulator.start()
    yield emulator.conn_params(host, port)
    if started:
        emulator.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: needs the local three-broker cluster (`make test-cluster`)"
    )


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """Commands run in-process set up logging on the stderr pytest captured for that test;
    put the root logger back afterwards so later tests do not write to a closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
