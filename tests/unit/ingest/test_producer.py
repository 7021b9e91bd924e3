"""The producer's configuration and its bridge from delivery callbacks to asyncio (no broker)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry

from ingest.metrics import IngestMetrics
from ingest.producer import EventProducer, _Pending
from ingest.records import OutRecord
from ingest.rejections import Rejection
from ingest.settings import IngestSettings


def producer(**settings: Any) -> EventProducer:
    return EventProducer(IngestSettings(**settings), IngestMetrics(CollectorRegistry()))


def test_config_is_durable_bounded_and_batched() -> None:
    conf = producer(produce_timeout_s=3, queue_max_messages=1234, linger_ms=7).config()
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    assert conf["queue.buffering.max.messages"] == 1234
    assert conf["message.timeout.ms"] == 3000 and conf["linger.ms"] == 7
    assert conf["compression.type"] == "lz4"


def test_pending_resolves_once_every_record_is_acknowledged_from_another_thread() -> None:
    async def scenario() -> tuple[int, KafkaError | None]:
        pending = _Pending(3, asyncio.get_running_loop())

        def deliveries() -> None:
            pending.on_delivery(None, None)
            pending.on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)
            pending.on_delivery(None, None)

        thread = threading.Thread(target=deliveries)
        thread.start()
        await asyncio.wait_for(pending.future, 5)
        thread.join()
        return pending.failed, pending.error

    failed, error = asyncio.run(scenario())
    assert failed == 1 and error is not None and error.code() == KafkaError._MSG_TIMED_OUT


def test_pending_stays_open_until_the_last_ack() -> None:
    async def scenario() -> bool:
        pending = _Pending(2, asyncio.get_running_loop())
        pending.on_delivery(None, None)
        await asyncio.sleep(0.01)
        return pending.future.done()

    assert asyncio.run(scenario()) is False


def test_send_before_start_is_503() -> None:
    with pytest.raises(Rejection) as info:
        asyncio.run(producer(retry_after_s=9).send([OutRecord("track", b"k", b"v")], []))
    assert (info.value.status, info.value.retry_after_s) == (503, 9)
