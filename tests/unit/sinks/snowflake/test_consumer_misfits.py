"""The sink consumer's misfit path against spec'd fakes of the loader, the consumer and the
producer: a flush refused for one record's data loads everything else, in order, exactly once,
and sends that record to the DLQ before the offsets move past it."""

from __future__ import annotations

import itertools
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any
from unittest.mock import MagicMock, create_autospec

import pytest
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, Message, Producer
from prometheus_client import CollectorRegistry

from runtime.rules import parse_rules
from schemas.codec import CLEAN_EVENT, AvroCodec
from schemas.snowflake_limits import MAX_VARCHAR_BYTES
from schemas.topics import HEADER_ERROR_CODE, HEADER_ORIGIN_OFFSET, HEADER_ORIGIN_TOPIC
from sinks.snowflake import deadletters
from sinks.snowflake.batcher import FlushBatch
from sinks.snowflake.consumer import SinkConsumer
from sinks.snowflake.errors import FencedError, WarehouseMisfitError
from sinks.snowflake.flushing import FlushMode
from sinks.snowflake.loader import FlushResult, SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.rows import Origin, event_rows
from sinks.snowflake.settings import SinkSettings
from tests.integration.sink_support import clean_event

T = "segment.events.track"
RULES = "sources:\n  - name: web\n    write_keys: [k1]\n"
AT = datetime(2026, 1, 1, tzinfo=UTC)


def record(n: int, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "type": "track",
        "messageId": f"m{n}",
        "source": "web",
        "anonymousId": "a",
        "event": "Order Completed",
        "receivedAt": AT,
        "timestamp": AT,
        "properties": '{"total": 3}',
        "context": "{}",
    }
    rec.update(over)
    return rec


def message(offset: int, value: bytes | None = b"raw", partition: int = 0) -> Any:
    msg = MagicMock(spec_set=Message)
    msg.error.return_value = None
    msg.topic.return_value = T
    msg.partition.return_value = partition
    msg.offset.return_value = offset
    msg.value.return_value = value
    msg.key.return_value = b"a"
    msg.timestamp.return_value = (TIMESTAMP_NOT_AVAILABLE, -1)
    return msg


class World:
    """A SinkConsumer wired to fakes, with one owned partition stored at offset 10."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, bad: set[int]) -> None:
        self.log: list[Any] = []
        self.loaded: list[FlushBatch] = []
        self.bad = bad
        self.fence_at: int | None = None
        self.loader = create_autospec(SnowflakeLoader, instance=True)
        self.loader.flush.side_effect = self.flush
        self.loader.ensure_offsets.side_effect = lambda tps: {tp: 10 for tp in tps}
        self.metrics = SinkMetrics(CollectorRegistry())
        settings = SinkSettings(retry_initial_s=0.01)
        self.sink = SinkConsumer(settings, parse_rules(RULES), self.loader, self.metrics)
        self.kafka = MagicMock(spec_set=Consumer)
        self.kafka.assignment.return_value = []
        self.producer = MagicMock(spec_set=Producer)
        self.producer.flush.side_effect = self._acked
        self.sink.attach(self.kafka, self.producer)
        self.fetch_offset = -1
        self.fetcher = MagicMock(spec_set=Consumer)
        self.fetcher.poll.side_effect = lambda *_: message(self.fetch_offset, b"original bytes")
        self.fetcher.assign.side_effect = self._assign
        monkeypatch.setattr(deadletters, "Consumer", lambda conf: self.fetcher)
        self.sink._start([(T, 0)])

    def _acked(self, *_: Any) -> int:
        self.log.append("dlq acked")
        return 0

    def _assign(self, tps: list[Any]) -> None:
        self.fetch_offset = tps[0].offset

    def flush(self, batch: FlushBatch) -> FlushResult:
        offsets = {r.values.get("_segflow_offset") for r in batch.rows}
        if self.fence_at is not None and self.fence_at in offsets:
            raise FencedError([(T, 0)])
        if offsets & self.bad:
            self.log.append(("refused", batch.moves()))
            raise WarehouseMisfitError("data refused during copy: 100082/22000", 100082)
        self.log.append(("loaded", batch.moves()))
        self.loaded.append(batch)
        return FlushResult(records=batch.records)

    def buffer(self, offsets: range) -> FlushBatch:
        for off in offsets:
            rows = event_rows(record(off), Origin(T, 0, off), audit=True)
            self.sink.batcher.add(T, 0, off, rows, 100, now=0.0)
        return self.take()

    def take(self) -> FlushBatch:
        batch = self.sink.batcher.take()
        assert batch is not None
        self.sink.progress.hand_to_flush(batch.moves())
        return batch

    def settle_failed(
        self, batch: FlushBatch, error: Exception, mode: FlushMode = FlushMode.STEADY
    ) -> None:
        future: Future[FlushResult] = Future()
        future.set_exception(error)
        self.sink.flusher.inflight = (batch, future)
        self.sink.flusher.settle(mode)


def moves_of(world: World) -> list[tuple[str, int, int, int]]:
    return [m for b in world.loaded for m in b.moves()]


def test_a_refused_record_goes_to_the_dlq_and_the_rest_loads_once_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World(monkeypatch, bad={13})
    batch = world.buffer(range(10, 18))
    world.settle_failed(batch, WarehouseMisfitError("refused", 100082))

    # the offsets chain from the stored 10 to 18 with no gap and no overlap
    moves = moves_of(world)
    assert moves[0][2] == 10 and moves[-1][3] == 18
    assert all(a[3] == b[2] for a, b in itertools.pairwise(moves))
    loaded_ids = [r.message_id for b in world.loaded for r in b.rows if r.table == "tracks"]
    assert loaded_ids == [f"m{n}" for n in range(10, 18) if n != 13]
    # the refused record, read again from Kafka, to the DLQ with its origin and reason
    (call,) = world.producer.produce.call_args_list
    headers = dict(call.kwargs["headers"])
    assert call.kwargs["value"] == b"original bytes"
    assert headers[HEADER_ORIGIN_TOPIC] == T.encode()
    assert headers[HEADER_ORIGIN_OFFSET] == b"13"
    assert headers[HEADER_ERROR_CODE] == b"warehouse_misfit_100082"
    # ... acknowledged by Kafka before any offset moved past it
    past = next(i for i, e in enumerate(world.log) if e[0] == "loaded" and e[1][0][2] == 13)
    assert world.log.index("dlq acked") < past
    assert world.kafka.commit.call_args.kwargs["offsets"][0].offset == 18
    sample = world.metrics.misfits.labels("warehouse_100082")._value.get()
    assert sample == 1


def test_several_refused_records_of_several_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(monkeypatch, bad={11, 16})
    world.sink._start([(T, 1)])
    for off in range(10, 18):
        for partition in (0, 1):
            rows = event_rows(record(off + 100 * partition), Origin(T, partition, off), audit=False)
            world.sink.batcher.add(T, partition, off, rows, 100, now=0.0)
    batch = world.take()
    world.settle_failed(batch, WarehouseMisfitError("refused", 100038))
    sent = sorted(
        (int(dict(c.kwargs["headers"])[HEADER_ORIGIN_OFFSET]))
        for c in world.producer.produce.call_args_list
    )
    assert sent == [11, 11, 16, 16]  # one of each partition at each bad offset
    loaded = sorted(r.message_id for b in world.loaded for r in b.rows if r.table == "tracks")
    expected = sorted(f"m{off + 100 * p}" for off in range(10, 18) for p in (0, 1))
    assert loaded == [m for m in expected if m not in {"m11", "m16", "m111", "m116"}]
    for partition in (0, 1):
        ends = [m[3] for m in moves_of(world) if m[1] == partition]
        assert max(ends) == 18


def test_a_fenced_part_stops_the_rest_and_re_reads_the_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World(monkeypatch, bad={16})
    world.fence_at = 17
    batch = world.buffer(range(10, 18))
    world.settle_failed(batch, WarehouseMisfitError("refused", 100082))
    assert all(m[3] <= 16 for m in moves_of(world))  # nothing after the fence
    assert world.metrics.fenced._value.get() == 1
    assert world.loader.ensure_offsets.call_count == 2  # assignment, then the re-seek


def test_a_misfit_inside_a_rebalance_is_left_for_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(monkeypatch, bad={12})
    batch = world.buffer(range(10, 14))
    world.settle_failed(batch, WarehouseMisfitError("refused", 100082), FlushMode.CALLBACK)
    assert not world.loaded and not world.producer.produce.called
    assert world.sink.progress.pending_reseeks() == [(T, 0)]


def test_an_oversized_record_goes_to_the_dlq_as_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(monkeypatch, bad=set())
    essay = "x" * (MAX_VARCHAR_BYTES + 10)
    codec = AvroCodec()
    big = codec.encode(CLEAN_EVENT, clean_event("track", 1, properties={"essay": essay}))
    small = codec.encode(CLEAN_EVENT, clean_event("track", 2, message_id="m2"))
    world.sink.intake.handle(message(10, big), 0.0)
    world.sink.intake.handle(message(11, small), 0.0)
    (call,) = world.producer.produce.call_args_list
    assert dict(call.kwargs["headers"])[HEADER_ERROR_CODE] == b"too_large"
    assert call.kwargs["value"] == big
    batch = world.sink.batcher.take()
    assert batch is not None and batch.moves() == [(T, 0, 10, 12)]
    assert {r.message_id for r in batch.rows} == {"m2"}
