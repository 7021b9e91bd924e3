"""Log routing: the libraries' chatter stays at WARNING, their rare and telling lines do not."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from runtime.logs import setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The levels setup_logging sets on library loggers (the root logger is put back by the
    autouse fixture of tests/conftest.py)."""
    names = (
        "faust",
        "aiokafka",
        "faust.tables.recovery",
        "faust.transport.consumer",
        "aiokafka.consumer.group_coordinator",
    )
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


@pytest.mark.usefixtures("restore_logging")
def test_recovery_and_rebalances_log_at_the_chosen_level_and_the_rest_of_faust_does_not() -> None:
    setup_logging("process", "INFO", "text")
    assert logging.getLogger("faust.tables.recovery").isEnabledFor(logging.INFO)
    assert logging.getLogger("faust.transport.consumer").isEnabledFor(logging.INFO)
    assert logging.getLogger("aiokafka.consumer.group_coordinator").isEnabledFor(logging.INFO)
    assert not logging.getLogger("faust.agents.agent").isEnabledFor(logging.INFO)
    assert not logging.getLogger("aiokafka.producer.sender").isEnabledFor(logging.INFO)


@pytest.mark.usefixtures("restore_logging")
def test_a_higher_level_quiets_the_telling_lines_too() -> None:
    setup_logging("process", "ERROR", "text")
    assert not logging.getLogger("faust.tables.recovery").isEnabledFor(logging.WARNING)
    assert logging.getLogger("faust.tables.recovery").isEnabledFor(logging.ERROR)
