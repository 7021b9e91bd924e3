"""Session fixtures shared by all tests: where the Kafka broker and the Snowflake emulator are.

Both are started through runtime.services when not reachable (and stopped again at the end
of the session if this session started them). Environment overrides:
SEGFLOW_KAFKA_BOOTSTRAP (an external broker), SEGFLOW_SNOWFLAKE_HOST / SEGFLOW_SNOWFLAKE_PORT.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from runtime.services import emulator, kafka


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
    yield f"{kafka.DEFAULT_HOST}:{kafka.DEFAULT_PORT}"
    if started:
        kafka.stop()


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


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """Commands run in-process set up logging on the stderr pytest captured for that test;
    put the root logger back afterwards so later tests do not write to a closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
