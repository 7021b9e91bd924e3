"""The sink's side of the DLQ: records it cannot load go to ``segment.dlq`` with the headers every
component writes (schemas/dlq.py: the reason, cut to the same length as the processors', the
error code, the origin, the record's own headers kept).

Two ways in: a record refused as it is read (undecodable, too large) is sent as consumed; a
record the warehouse refused (a misfit, found at flush time when the buffers hold rows only) is
read again from Kafka by a consumer of its own (assigned, never in the group). Either way its
copy must be acknowledged by Kafka (`ack`) before the batch's offsets move past it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from runtime.kafka_config import consumer_config
from schemas.dlq import dlq_headers
from schemas.errors import FatalError, RecordError
from sinks.snowflake.settings import SinkSettings

logger = logging.getLogger(__name__)

# How long a refused record is looked for when read again (then its copy carries headers only).
REFETCH_TIMEOUT_S = 10.0


class DeadLetters:
    """Produces DLQ copies and counts those Kafka has not acknowledged yet."""

    def __init__(self, settings: SinkSettings, producer: Any) -> None:
        self.settings = settings
        self.topic = settings.kafka.topics.dlq
        self.producer = producer
        self.pending = 0
        self._fetcher: Any = None

    def send(self, msg: Message, error: RecordError) -> None:
        """A record as consumed, refused with `error` (which names where it was read)."""
        logger.warning("record to the DLQ: %s", error)
        headers = dlq_headers(
            error.reason,
            error.code,
            str(msg.topic()),
            int(msg.partition() or 0),
            int(msg.offset() or 0),
            _origin(msg),
        )
        self._produce(msg.value(), msg.key(), headers)

    def send_refused(self, topic: str, partition: int, offset: int, error: RecordError) -> None:
        """A record the warehouse refused, read again from Kafka (the buffers hold rows only)."""
        msg = self._fetch(topic, partition, offset)
        logger.warning("record to the DLQ: %s", error)
        origin = _origin(msg) if msg is not None else None
        headers = dlq_headers(error.reason, error.code, topic, partition, offset, origin)
        value = msg.value() if msg is not None else None
        key = msg.key() if msg is not None else None
        self._produce(value, key, headers)

    def _produce(self, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        self.producer.produce(self.topic, value=value, key=key, headers=headers)
        self.producer.poll(0)
        self.pending += 1

    def ack(self) -> None:
        """DLQ copies of a batch's refused records must be in Kafka before its offsets move past
        them."""
        if self.pending:
            if self.producer.flush(30) > 0:
                raise FatalError("DLQ records not acknowledged by Kafka; not committing offsets")
            self.pending = 0

    def close(self) -> None:
        self.producer.flush(10)
        if self._fetcher is not None:
            self._fetcher.close()

    def _fetch(self, topic: str, partition: int, offset: int) -> Message | None:
        """One record read again from Kafka; None if it cannot be read within a few seconds."""
        if self._fetcher is None:
            conf = consumer_config(
                self.settings.kafka,
                "sink-misfits",
                f"{self.settings.group_id}-misfits",
                **{"enable.partition.eof": True},
            )
            self._fetcher = Consumer(conf)
        self._fetcher.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + REFETCH_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                msg = self._fetcher.poll(0.5)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        break
                    continue
                if int(msg.offset() or 0) == offset:
                    return msg
                if int(msg.offset() or 0) > offset:
                    break
        finally:
            self._fetcher.unassign()
        logger.warning("could not read %s[%d]@%d again for the DLQ", topic, partition, offset)
        return None


def _origin(msg: Message) -> list[tuple[str, bytes | None]]:
    """The record's own headers (confluent-kafka types a value as str or bytes)."""
    raw = msg.headers() or []
    items = raw.items() if isinstance(raw, Mapping) else raw
    return [(str(k), v.encode() if isinstance(v, str) else v) for k, v in items]
