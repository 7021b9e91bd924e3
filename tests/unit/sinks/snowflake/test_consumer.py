"""The sink consumer's state transitions against spec'd fakes: the Kafka consumer and producer
(`MagicMock(spec_set=...)`), and the loader (`create_autospec(SnowflakeLoader)`) over a dict that
plays the warehouse's offsets table, compare-and-set included. What is checked is what a user
would see: what the warehouse committed, where Kafka is told to fetch and commit, the metrics."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any
from unittest.mock import MagicMock, create_autospec

import pytest
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from runtime.rules import parse_rules
from schemas.codec import CLEAN_EVENT, AvroCodec
from schemas.dlq import dlq_headers
from schemas.errors import FatalError
from sinks.snowflake.batcher import FlushBatch
from sinks.snowflake.consumer import SinkConsumer
from sinks.snowflake.errors import FencedError, WarehouseRetryableError
from sinks.snowflake.flushing import IDLE_POLL_S, IN_FLIGHT_POLL_S, FlushMode
from sinks.snowflake.loader import FlushResult, SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.progress import PartitionState
from sinks.snowflake.rows import Origin, event_rows
from sinks.snowflake.settings import SinkSettings
from tests.integration.sink_support import clean_event

T = "segment.events.track"
P0, P1 = (T, 0), (T, 1)
RULES = "sources:\n  - name: web\n    write_keys: [k1]\n"
AT = datetime(2026, 1, 1, tzinfo=UTC)


def record(n: int) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": f"m{n}",
        "source": "web",
        "anonymousId": "a",
        "event": "Order Completed",
        "receivedAt": AT,
        "timestamp": AT,
        "properties": "{}",
        "context": "{}",
    }


def message(offset: int, value: bytes | None, partition: int = 0, headers: Any = None) -> MagicMock:
    msg = MagicMock(spec_set=Message)
    msg.error.return_value = None
    msg.topic.return_value = T
    msg.partition.return_value = partition
    msg.offset.return_value = offset
    msg.value.return_value = value
    msg.key.return_value = b"a"
    msg.timestamp.return_value = (TIMESTAMP_NOT_AVAILABLE, -1)
    msg.headers.return_value = headers
    return msg


def tps(*keys: tuple[str, int]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t, p in keys]


class World:
    """A SinkConsumer wired to fakes. `warehouse` holds the stored next offset per partition;
    a flush moves it by compare-and-set, as the real transaction does."""

    def __init__(self, **settings: Any) -> None:
        self.warehouse: dict[tuple[str, int], int] = {}
        self.log: list[Any] = []
        self.failures: list[Exception] = []  # raised by the next flushes, in order
        self.gate: threading.Event | None = None  # holds a flush in the worker until set
        self.prepared_here_s = 0.0  # what each flush reports of preparing itself
        self.loader = create_autospec(SnowflakeLoader, instance=True)
        self.loader.flush.side_effect = self._flush
        self.loader.ensure_offsets.side_effect = self._ensure
        self.loader.prepare.return_value = None
        self.metrics = SinkMetrics(CollectorRegistry())
        # the cooperative protocol unless a test asks for the default (eager roundrobin): most
        # rebalance tests here hand over single partitions
        settings.setdefault("assignment_strategy", "cooperative-sticky")
        config = SinkSettings(retry_initial_s=0.01, retry_max_s=0.01, **settings)
        self.sink = SinkConsumer(config, parse_rules(RULES), self.loader, self.metrics)
        self.kafka = MagicMock(spec_set=Consumer)
        self.kafka.assignment.return_value = []
        self.kafka.consume.return_value = []
        self.kafka.get_watermark_offsets.return_value = (0, 100)
        self.kafka.incremental_unassign.side_effect = lambda p: self.log.append(("unassign", p))
        self.producer = MagicMock(spec_set=Producer)
        self.producer.flush.return_value = 0
        self.sink.attach(self.kafka, self.producer)

    def _ensure(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        self.log.append(("offsets read", sorted(partitions)))
        return {tp: self.warehouse.setdefault(tp, -1) for tp in partitions}

    def _flush(self, batch: FlushBatch) -> FlushResult:
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.failures:
            raise self.failures.pop(0)
        for topic, partition, expected, _new in batch.moves():
            if self.warehouse.get((topic, partition)) != expected:
                raise FencedError([(topic, partition)])
        for topic, partition, _expected, new in batch.moves():
            self.warehouse[(topic, partition)] = new
        self.log.append(("loaded", batch.moves()))
        return FlushResult(records=batch.records, prepared_here_s=self.prepared_here_s)

    def assign(self, *keys: tuple[str, int]) -> None:
        self.sink._on_assign(self.kafka, tps(*keys))

    def buffer(self, key: tuple[str, int], offsets: range) -> None:
        for off in offsets:
            rows = event_rows(record(off), Origin(key[0], key[1], off), audit=False)
            assert self.sink.batcher.add(key[0], key[1], off, rows, 100, now=0.0)

    def loaded(self) -> list[tuple[str, int, int, int]]:
        return [m for e in self.log if e[0] == "loaded" for m in e[1]]

    def committed(self) -> list[tuple[str, int, int]]:
        return [
            (tp.topic, tp.partition, tp.offset)
            for call in self.kafka.commit.call_args_list
            for tp in call.kwargs["offsets"]
        ]

    def fetching_from(self) -> list[tuple[str, int, int]]:
        return [
            (tp.topic, tp.partition, tp.offset)
            for call in self.kafka.incremental_assign.call_args_list
            for tp in call.args[0]
        ]

    def in_flight(self) -> None:
        """Hand what is buffered to the worker, held there until `release()`."""
        self.gate = threading.Event()
        self.sink.flusher.flush()
        assert self.sink.flusher.inflight is not None

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set()


@pytest.fixture
def world() -> World:
    w = World()
    w.warehouse[P0] = 10
    w.warehouse[P1] = 20
    w.assign(P0, P1)
    return w


def test_assignment_starts_each_partition_where_the_warehouse_says(world: World) -> None:
    assert world.fetching_from() == [(T, 0, 10), (T, 1, 20)]
    assert world.sink.progress[P0].state is PartitionState.FETCHING
    assert world.sink.progress[P0].stored == 10


def test_a_flush_in_the_worker_moves_progress_and_commits_advice(world: World) -> None:
    world.buffer(P0, range(10, 13))
    world.in_flight()
    assert world.sink.progress[P0].in_flight == 13
    world.release()
    world.sink.flusher.settle(FlushMode.STEADY)
    assert world.warehouse[P0] == 13 and world.sink.progress[P0].stored == 13
    assert (T, 0, 13) in world.committed()


def test_a_revoke_mid_flush_waits_for_it_then_loads_the_rest_before_releasing(
    world: World,
) -> None:
    world.buffer(P0, range(10, 13))
    world.in_flight()
    world.buffer(P0, range(13, 15))  # read while the warehouse works
    world.release()
    world.sink._on_revoke(world.kafka, tps(P0))
    assert world.loaded() == [(T, 0, 10, 13), (T, 0, 13, 15)]
    assert world.log[-1] == ("unassign", tps(P0))  # released only after both loaded
    assert world.sink.progress[P0].state is PartitionState.REVOKED
    assert world.sink.progress[P1].state is PartitionState.FETCHING


def test_an_assignment_mid_flush_settles_it_before_reading_offsets(world: World) -> None:
    world.buffer(P0, range(10, 12))
    world.in_flight()
    world.release()
    world.assign((T, 2))
    loaded = world.log.index(("loaded", [(T, 0, 10, 12)]))
    assert loaded < world.log.index(("offsets read", [(T, 2)]))


def test_a_flush_failing_in_a_rebalance_is_re_read_after_it_not_loaded_in_it(
    world: World,
) -> None:
    world.buffer(P0, range(10, 12))
    world.buffer(P1, range(20, 22))
    world.failures.append(WarehouseRetryableError("warehouse away", 0))
    world.in_flight()
    world.buffer(P1, range(22, 24))  # read while the warehouse works
    world.release()
    world.sink._on_revoke(world.kafka, tps(P1))
    # neither the failed batch nor the revoked partition's buffer is loaded in the callback:
    # the buffers after a failed flush do not start at the warehouse's offsets
    assert world.loaded() == [] and world.loader.flush.call_count == 1
    assert world.sink.progress.pending_reseeks() == [P0]
    assert world.sink.progress[P1].released
    world.sink._step()  # after the callback: the kept partition is re-read from the warehouse
    assert world.log[-2:] == [("unassign", tps(P0)), ("offsets read", [P0])]
    assert world.fetching_from()[-1] == (T, 0, 10)
    assert world.sink.progress[P0].state is PartitionState.FETCHING
    assert world.sink.batcher.held(T, 0) == 0


def test_a_fenced_flush_drops_its_batch_and_re_reads_the_other_writers_offsets(
    world: World,
) -> None:
    codec = AvroCodec()
    world.buffer(P0, range(10, 13))
    world.in_flight()
    world.warehouse[P0] = 11  # another instance loaded offset 10 meanwhile
    stale = codec.encode(CLEAN_EVENT, clean_event("track", 1))
    world.release()
    world.sink.flusher.settle(FlushMode.STEADY)
    assert world.loaded() == [] and world.metrics.fenced._value.get() == 1
    assert world.log[-2:] == [("unassign", tps(P0)), ("offsets read", [P0])]
    assert world.fetching_from()[-1] == (T, 0, 11)
    assert world.sink.progress[P0].stored == 11
    assert world.sink.batcher.held(T, 0) == 0
    # a record fetched before the re-seek, still handed over in this poll, is stale (loading
    # it would skip offsets 11 and 12)
    world.kafka.consume.return_value = [message(13, stale)]
    world.sink.serve(0.01)
    assert world.sink.batcher.held(T, 0) == 0
    world.kafka.consume.return_value = [message(11, stale)]
    world.sink._step()  # a new poll: records are read from the new position
    assert world.sink.batcher.held(T, 0) == 1 and not world.sink.progress.skips(P0)


def test_a_partition_lost_while_its_flush_is_retried_is_not_loaded(world: World) -> None:
    world.buffer(P0, range(10, 12))
    world.buffer(P1, range(20, 22))
    world.failures.append(WarehouseRetryableError("warehouse away", 0))
    world.kafka.assignment.return_value = tps(P0, P1)

    def lose_p1(*_: Any) -> list[Any]:
        world.kafka.consume.side_effect = None
        world.sink._on_lost(world.kafka, tps(P1))
        return []

    world.kafka.consume.side_effect = lose_p1  # served while the flush backs off
    world.in_flight()
    world.release()
    world.sink.flusher.settle(FlushMode.STEADY)
    assert world.loaded() == [(T, 0, 10, 12)]
    assert world.warehouse[P1] == 20
    assert world.sink.progress[P1].state is PartitionState.LOST
    assert (T, 1, 22) not in world.committed()
    world.kafka.pause.assert_called_once_with(tps(P0, P1))
    world.kafka.resume.assert_called_once_with(tps(P0))  # the lost one stays paused
    assert world.metrics.retries._value.get() >= 1


def test_the_final_flush_loads_here_and_commits_synchronously(world: World) -> None:
    world.buffer(P0, range(10, 12))
    world.buffer(P1, range(20, 21))
    world.sink.stop_flush()
    assert sorted(world.loaded()) == [(T, 0, 10, 12), (T, 1, 20, 21)]
    assert world.sink.flusher.inflight is None
    final = world.kafka.commit.call_args_list[-1]
    assert final.kwargs["asynchronous"] is False
    assert sorted((tp.partition, tp.offset) for tp in final.kwargs["offsets"]) == [
        (0, 12),
        (1, 21),
    ]


def test_a_final_flush_that_keeps_failing_stops_with_nothing_committed(world: World) -> None:
    world.buffer(P0, range(10, 12))
    world.failures.extend(WarehouseRetryableError("warehouse away", 0) for _ in range(5))
    with pytest.raises(FatalError, match="nothing committed"):
        world.sink.stop_flush()
    assert world.loaded() == [] and world.warehouse[P0] == 10
    assert world.loader.flush.call_count == 3
    world.kafka.pause.assert_not_called()  # a final flush does not serve the group


def test_a_prepared_ahead_flush_is_discarded_when_its_partition_is_revoked(
    world: World,
) -> None:
    prepared = MagicMock()
    world.loader.prepare.return_value = prepared
    world.buffer(P0, range(10, 12))
    world.in_flight()
    world.buffer(P0, range(12, 14))
    world.buffer(P1, range(20, 22))
    world.sink.flusher.prepare_ahead(now=0.0)
    assert world.sink.flusher.ahead is not None
    world.release()
    world.sink._on_revoke(world.kafka, tps(P0))
    world.sink.flusher.flush()  # the snapshot no longer matches: everything is taken afresh
    world.sink.flusher.settle(FlushMode.STEADY)
    prepared.discard.assert_called_once_with()
    assert world.metrics.prepared_ahead.labels("dropped")._value.get() == 1
    assert world.loaded() == [(T, 0, 10, 12), (T, 0, 12, 14), (T, 1, 20, 22)]


def test_a_prepared_ahead_flush_is_taken_as_prepared(world: World) -> None:
    prepared = MagicMock()
    world.loader.prepare.return_value = prepared
    world.buffer(P0, range(10, 12))
    world.in_flight()
    world.buffer(P0, range(12, 14))
    world.sink.flusher.prepare_ahead(now=0.0)
    world.release()
    world.sink.flusher.settle(FlushMode.STEADY)
    world.sink.flusher.flush()
    world.sink.flusher.settle(FlushMode.STEADY)
    (second,) = [c.args[0] for c in world.loader.flush.call_args_list[1:]]
    assert second.prepared is prepared
    prepared.discard.assert_not_called()


def test_with_the_buffers_full_the_next_flush_is_prepared_before_waiting() -> None:
    w = World(max_buffered_bytes=1000, flush_rows=2)
    w.loader.prepare.return_value = MagicMock()
    w.assign(P0)
    w.buffer(P0, range(0, 6))  # 600 bytes
    w.in_flight()
    w.sink.flusher.pacer.flushed(60.0)  # the flush in flight is expected to take long
    w.buffer(P0, range(6, 10))  # 400 more: ready, and the memory bound reached
    threading.Timer(0.2, w.release).start()
    w.sink.flusher.step(w.sink.clock())
    # prepared while the flush in flight went on (the pacer alone would have waited), then
    # that flush settled and the prepared one handed over
    assert w.loader.prepare.call_count == 1
    assert w.loaded()[0] == (T, 0, -1, 6)
    assert w.sink.flusher.inflight is not None
    second = w.sink.flusher.inflight[0]
    assert second.moves() == [(T, 0, 6, 10)]
    assert second.prepared is w.loader.prepare.return_value
    w.sink.flusher.settle(FlushMode.STEADY)
    assert w.loaded() == [(T, 0, -1, 6), (T, 0, 6, 10)]


def test_the_pacer_learns_a_flushs_warehouse_part_not_its_own_preparation() -> None:
    """A flush not prepared ahead prepares itself in the worker; that time is left out of the
    estimate the next preparation ahead is timed by, and the pacer knows it takes longer."""
    w = World()
    w.assign(P0)
    w.buffer(P0, range(0, 4))
    now = [100.0]
    w.sink.flusher.clock = lambda: now[0]
    w.prepared_here_s = 1.5
    w.in_flight()  # handed over at 100.0, nothing prepared ahead
    assert not w.sink.flusher.inflight_ahead
    now[0] = 102.0
    w.release()
    w.sink.flusher.settle(FlushMode.STEADY)
    assert w.sink.flusher.pacer.flush_s == pytest.approx(0.5)


def test_a_records_age_counts_from_its_kafka_timestamp_and_the_loop_waits_until_due() -> None:
    w = World(flush_age_s=1.0)
    w.assign(P0)
    value = AvroCodec().encode(CLEAN_EVENT, clean_event("track", 1))
    wall = 1_000_000.0
    w.sink.intake.wall = lambda: wall
    produced = message(0, value)
    produced.timestamp.return_value = (TIMESTAMP_CREATE_TIME, int((wall - 0.9) * 1000))
    w.kafka.consume.return_value = [produced]
    w.sink._step()
    assert w.kafka.consume.call_args.args[1] == IDLE_POLL_S  # nothing was buffered
    assert w.loader.flush.call_count == 0
    # produced 0.9 s ago: due in 0.1 s, not in the full flush age; the loop waits no longer
    due = w.sink.batcher.due_in(w.sink.clock())
    assert due is not None and due <= 0.1
    w.kafka.consume.return_value = []
    w.sink._step()
    assert w.kafka.consume.call_args.args[1] <= 0.1
    time.sleep(0.1)
    w.gate = threading.Event()  # hold the flush in the worker
    w.sink._step()
    assert w.sink.flusher.inflight is not None
    w.sink._step()  # while it is in flight, the loop looks at it often
    assert w.kafka.consume.call_args.args[1] == IN_FLIGHT_POLL_S
    w.gate.set()
    w.sink.flusher.settle(FlushMode.STEADY)
    assert w.loaded() == [(T, 0, -1, 1)]

    # without a timestamp a record's age counts from when it was read
    w.kafka.consume.return_value = [message(1, value)]
    w.sink._step()
    due = w.sink.batcher.due_in(w.sink.clock())
    assert due is not None and due > 0.9


def test_an_undecodable_record_goes_to_the_dlq_with_its_own_headers(world: World) -> None:
    origin = [("segflow-source", b"web")]
    world.sink.intake.handle(message(10, b"\xff not avro", headers=origin), now=0.0)
    (call,) = world.producer.produce.call_args_list
    headers = call.kwargs["headers"]
    assert headers[0] == ("segflow-source", b"web")
    reason, code = dict(headers)["segflow-error"].decode(), dict(headers)["segflow-error-code"]
    assert headers == dlq_headers(reason, code.decode(), T, 0, 10, origin)
    assert call.kwargs["value"] == b"\xff not avro"
    # its partition moves on: the next flush moves the offset past it, after the DLQ ack
    world.sink.stop_flush()
    assert world.loaded() == [(T, 0, 10, 11)]
    world.producer.flush.assert_any_call(30)


@pytest.mark.parametrize("field", ["timestamp", "receivedAt", "sentAt", "originalTimestamp"])
@pytest.mark.parametrize("micros", [2**62, -(2**62)])
def test_a_timestamp_past_the_calendar_goes_to_the_dlq_and_the_partition_moves_on(
    world: World, field: str, micros: int
) -> None:
    """A clean record (written by a replay, a backfill or any other producer than the
    processors) whose timestamp no calendar date holds is refused, not a crash of the sink on
    every restart."""
    good = AvroCodec().encode(CLEAN_EVENT, clean_event("track", 1))
    bad = AvroCodec().encode(CLEAN_EVENT, {**clean_event("track", 2), field: micros})
    world.sink.intake.handle(message(10, bad), now=0.0)
    world.sink.intake.handle(message(11, good), now=0.0)
    (call,) = world.producer.produce.call_args_list
    assert call.kwargs["value"] == bad
    assert b"out of range" in dict(call.kwargs["headers"])["segflow-error"]
    world.sink.stop_flush()
    assert world.loaded() == [(T, 0, 10, 12)]


def test_an_unexpected_failure_of_a_record_goes_to_the_dlq_named_by_its_type_only(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Any exception while making a record's rows (a bug) sends the record to the DLQ with
    the exception's type, never its text (it may quote a value), and the partition goes on."""
    intake = world.sink.intake
    rows_of = intake._rows
    secret = "".join(reversed("terces-a"))

    def failing(topic: str, value: bytes, origin: Origin) -> Any:
        if origin.offset == 10:
            raise IndexError(f"cannot index {secret}")
        return rows_of(topic, value, origin)

    monkeypatch.setattr(intake, "_rows", failing)
    good = AvroCodec().encode(CLEAN_EVENT, clean_event("track", 1))
    with caplog.at_level(logging.DEBUG):
        intake.handle(message(10, good), now=0.0)
        intake.handle(message(11, good), now=0.0)
    (call,) = world.producer.produce.call_args_list
    headers = dict(call.kwargs["headers"])
    reason = headers["segflow-error"].decode()
    assert "IndexError" in reason and secret not in reason
    assert headers["segflow-error-code"] == b"processing_failed"
    assert "IndexError" in caplog.text and secret not in caplog.text
    world.sink.stop_flush()
    assert world.loaded() == [(T, 0, 10, 12)]


# -- an eager protocol (assignment_strategy roundrobin): whole assignments, set at once ------


@pytest.fixture
def eager() -> World:
    w = World(assignment_strategy="roundrobin")
    w.kafka.unassign.side_effect = lambda: w.log.append(("unassign all",))
    w.warehouse[P0] = 10
    w.warehouse[P1] = 20
    w.assign(P0, P1)
    return w


def assigned_whole(w: World) -> list[list[tuple[str, int, int]]]:
    return [
        [(tp.topic, tp.partition, tp.offset) for tp in call.args[0]]
        for call in w.kafka.assign.call_args_list
    ]


def test_the_consumer_asks_for_the_configured_assignment_strategy() -> None:
    conf = World(assignment_strategy="roundrobin").sink.consumer_conf()
    assert conf["partition.assignment.strategy"] == "roundrobin"
    conf = World(assignment_strategy="cooperative-sticky").sink.consumer_conf()
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"
    # the default splits every topic over the instances (several sinks share the busy topic)
    assert SinkSettings().assignment_strategy == "roundrobin"


def test_eager_assignment_sets_the_whole_assignment_at_the_warehouse_offsets(
    eager: World,
) -> None:
    assert assigned_whole(eager) == [[(T, 0, 10), (T, 1, 20)]]
    eager.kafka.incremental_assign.assert_not_called()
    assert eager.sink.progress[P0].state is PartitionState.FETCHING


def test_eager_revocation_loads_what_is_held_then_gives_everything_back(eager: World) -> None:
    eager.buffer(P0, range(10, 13))
    eager.sink._on_revoke(eager.kafka, tps(P0, P1))
    assert eager.loaded() == [(T, 0, 10, 13)]
    assert eager.log[-1] == ("unassign all",)  # after the load
    eager.kafka.incremental_unassign.assert_not_called()
    assert eager.sink.progress.assigned() == set()
    eager.assign(P1)  # the next generation's assignment, at the warehouse offset
    assert assigned_whole(eager)[-1] == [(T, 1, 20)]


def test_eager_fenced_flush_restarts_every_partition_at_the_warehouse_offsets(
    eager: World,
) -> None:
    """assign() replaces the whole assignment: a re-seek restarts every partition, each where
    the warehouse says; what the others held is read again, nothing skipped."""
    eager.buffer(P0, range(10, 13))
    eager.buffer(P1, range(20, 22))
    eager.in_flight()
    eager.warehouse[P0] = 11  # another instance loaded offset 10 meanwhile
    eager.release()
    eager.sink.flusher.settle(FlushMode.STEADY)
    assert eager.loaded() == [] and eager.metrics.fenced._value.get() == 1
    assert eager.log[-1] == ("offsets read", [P0, P1])
    assert assigned_whole(eager)[-1] == [(T, 0, 11), (T, 1, 20)]
    eager.kafka.incremental_unassign.assert_not_called()
    eager.kafka.incremental_assign.assert_not_called()
    for key, stored in ((P0, 11), (P1, 20)):
        assert eager.sink.progress[key].state is PartitionState.FETCHING
        assert eager.sink.progress[key].stored == stored
        assert eager.sink.batcher.held(*key) == 0
    codec = AvroCodec()
    stale = codec.encode(CLEAN_EVENT, clean_event("track", 1))
    eager.kafka.consume.return_value = [message(22, stale), message(13, stale)]
    eager.sink.serve(0.01)  # fetched before the re-seek: stale for both partitions
    assert eager.sink.batcher.total_records == 0
