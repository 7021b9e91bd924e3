"""SnowflakeLoader's state transitions against spec'd fakes of the connector's connection: what
a retryable error, a misfit and a fence do to the connection and the layouts it cached, and when
a flush prepared ahead is used or planned again."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sinks.snowflake.batcher import FlushBatch, PartitionSlice
from sinks.snowflake.errors import FencedError, WarehouseMisfitError, WarehouseRetryableError
from sinks.snowflake.evolution import plan
from sinks.snowflake.loader import LoaderOptions, SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.rows import Origin, TableRow, event_rows
from tests.integration.sink_support import clean_event
from tests.unit.sinks.snowflake.fake_warehouse import (
    SETTINGS,
    FakeWarehouse,
    layout_of,
    lock_timeout,
    misfit_error,
)

TOPIC = "segment.events.track"
LAYOUT_QUERY = "SELECT table_name, column_name"


def rows_of(first: int, count: int) -> list[TableRow]:
    rows: list[TableRow] = []
    for n in range(first, first + count):
        rows += event_rows(clean_event("track", n), Origin(TOPIC, 0, n), audit=True)
    return rows


def batch(first: int, count: int = 2) -> FlushBatch:
    moves = [PartitionSlice(TOPIC, 0, first, first + count, count)]
    return FlushBatch(moves, rows_of(first, count), count, 0)


class World:
    def __init__(self, tmp_path: Path) -> None:
        # the tables exist with every column the events need: flushes run no DDL
        self.fake = FakeWarehouse(layout_of(plan(rows_of(0, 1), {}).columns))
        self.metrics = SinkMetrics(CollectorRegistry())
        options = LoaderOptions(group_id="g", stage_dir=str(tmp_path))
        self.loader = SnowflakeLoader(SETTINGS, options, self.metrics, connect=self.fake.connect)
        self.tmp_path = tmp_path

    def layout_reads(self) -> int:
        return sum(1 for s in self.fake.statements if s.startswith(LAYOUT_QUERY))

    def prepared_ahead(self, outcome: str) -> float:
        return self.metrics.prepared_ahead.labels(outcome)._value.get()  # type: ignore[attr-defined]

    def files(self) -> list[Path]:
        return list(self.tmp_path.glob("*.parquet"))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_retryable_error_drops_the_connection_and_the_next_flush_logs_in_again(
    world: World,
) -> None:
    world.loader.flush(batch(0))
    world.fake.fail['INTO "WEB"."TRACKS" ('] = lock_timeout()
    with pytest.raises(WarehouseRetryableError):
        world.loader.flush(batch(2))
    world.fake.connections[0].close.assert_called_once_with()  # a broken session is not reused
    del world.fake.fail['INTO "WEB"."TRACKS" (']
    reads = world.layout_reads()
    result = world.loader.flush(batch(2))
    assert len(world.fake.connections) == 2 and result.records == 2
    assert world.layout_reads() == reads + 1  # what the old session knew is read again
    assert world.files() == []


def test_a_misfit_keeps_the_connection_and_reads_every_layout_again(world: World) -> None:
    world.loader.flush(batch(0))
    world.loader.flush(batch(2))
    assert world.layout_reads() == 1  # cached while nothing changed
    world.fake.fail['INTO "WEB"."TRACKS" ('] = misfit_error()
    with pytest.raises(WarehouseMisfitError):
        world.loader.flush(batch(4))
    world.fake.fail.clear()
    world.loader.flush(batch(4))
    assert len(world.fake.connections) == 1
    assert world.layout_reads() == 2  # a layout changed by someone else is one cause


def test_a_fenced_flush_keeps_the_connection_and_the_layouts(world: World) -> None:
    world.loader.flush(batch(0))
    world.fake.fenced = True
    with pytest.raises(FencedError):
        world.loader.flush(batch(2))
    world.fake.fenced = False
    world.loader.flush(batch(2))
    assert len(world.fake.connections) == 1 and world.layout_reads() == 1
    world.fake.connections[0].close.assert_not_called()


def test_nothing_is_prepared_ahead_before_the_layouts_are_known(world: World) -> None:
    assert world.loader.prepare(batch(0)) is None
    assert world.fake.statements == [] and world.files() == []


def test_a_flush_prepared_ahead_is_used_while_the_layouts_hold(world: World) -> None:
    world.loader.flush(batch(0))
    ahead = batch(2)
    prepared = world.loader.prepare(ahead)
    assert prepared is not None and prepared.path.exists()
    ahead.prepared = prepared
    world.loader.flush(ahead)
    assert world.prepared_ahead("used") == 1 and world.prepared_ahead("replanned") == 0
    assert ahead.prepared is None and world.files() == []


def test_a_flush_prepared_before_a_misfit_is_planned_again(world: World) -> None:
    world.loader.flush(batch(0))
    ahead = batch(4)
    ahead.prepared = stale = world.loader.prepare(ahead)
    assert stale is not None
    world.fake.fail['INTO "WEB"."TRACKS" ('] = misfit_error()
    with pytest.raises(WarehouseMisfitError):
        world.loader.flush(batch(2))
    world.fake.fail.clear()
    world.loader.flush(ahead)
    assert world.prepared_ahead("replanned") == 1 and world.prepared_ahead("used") == 0
    assert not stale.path.exists() and world.files() == []


def test_close_drops_the_staging_table_and_the_connection(world: World) -> None:
    world.loader.flush(batch(0))
    staging = world.loader.staging.split(".")[-1].upper()
    world.loader.close()
    assert world.fake.statements[-1].startswith("DROP TABLE IF EXISTS")
    assert staging in world.fake.statements[-1]
    world.fake.connections[0].close.assert_called_once_with()
    world.loader.close()  # closing again does nothing
    assert len(world.fake.connections) == 1
