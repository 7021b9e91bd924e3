"""What the sink reads becomes rows in the partition buffers, a DLQ entry, or nothing.

Each record of an owned partition is decoded (Avro) and turned into rows (rows.py): clean events,
identity links and the processors' schema changes. A record of a suppressed user is consumed but
not loaded; one that cannot be decoded, or whose values could never fit the warehouse
(misfits.oversized), goes to the DLQ at once and its partition moves on. Records of a partition
re-sought during this consume() batch are stale and ignored (progress.py). A buffer's age (the
flush trigger) counts from its first record's Kafka timestamp, when the processors produced it,
so the time a record spent upstream (their transaction) counts as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from runtime.rules import Rules
from schemas.codec import CLEAN_EVENT, IDENTITY_LINK, SCHEMA_CHANGE, AvroCodec
from schemas.dlq import PROCESSING_FAILED, failure_reason, log_failure
from schemas.errors import FatalError, RecordError
from sinks.snowflake import misfits
from sinks.snowflake.batcher import Batcher
from sinks.snowflake.deadletters import DeadLetters
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.progress import Progress
from sinks.snowflake.rows import (
    Origin,
    TableRow,
    event_rows,
    identity_row,
    schema_change_row,
    schema_name,
)
from sinks.snowflake.settings import SinkSettings

logger = logging.getLogger(__name__)

# Estimated in-memory bytes per byte of Avro: decoded rows (dicts of Python objects, the
# per-event copy, the audit document) take this many times the record's size.
MEMORY_PER_AVRO_BYTE = 12


class Suppressions(Protocol):
    def is_suppressed(self, user_id: object = None, anonymous_id: object = None) -> bool: ...

    @property
    def identifiers(self) -> AbstractSet[str]: ...


class RecordIntake:
    """Turns consumed records into buffered rows (or DLQ entries) and counts them."""

    def __init__(
        self,
        settings: SinkSettings,
        rules: Rules,
        batcher: Batcher,
        progress: Progress,
        metrics: SinkMetrics,
        suppressions: Suppressions | None,
    ) -> None:
        self.settings = settings
        self.batcher = batcher
        self.progress = progress
        self.metrics = metrics
        self.suppressions = suppressions
        self.dead_letters: DeadLetters | None = None  # set when the producer exists (run)
        topics = settings.kafka.topics
        self.identity_topic = topics.identity
        self.changes_topic = topics.schema_changes
        self.codec = AvroCodec()
        self._audit = {s.name: s.audit for s in rules.sources}
        self._counters: dict[tuple[str, str], Any] = {}  # records counter children
        self._counts: dict[tuple[str, str], int] = {}  # records handled, not counted yet
        self.wall = time.time  # the clock of Kafka timestamps (a record's age counts from it)

    def handle(self, msg: Message, now: float) -> None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise FatalError(f"Kafka consumer failed: {err.str()}")
            logger.warning("consumer error: %s", err.str())
            return
        topic, partition = str(msg.topic()), int(msg.partition() or 0)
        offset = int(msg.offset() or 0)
        if self.progress.skips((topic, partition)) or not self.batcher.owns(topic, partition):
            return
        value = msg.value()
        rows: list[TableRow] = []
        outcome = "buffered"
        try:
            if value is None:
                outcome = "tombstone"
            else:
                made = self._rows(topic, value, Origin(topic, partition, offset))
                if made is None:
                    outcome = "suppressed"
                else:
                    rows = made
        except RecordError as exc:
            rows = []
            self._to_dlq(msg, exc.at(topic, partition, offset))
            outcome = "dlq"
        except (KeyError, TypeError, ValueError) as exc:
            self._to_dlq(
                msg, RecordError(f"{type(exc).__name__}: {exc}").at(topic, partition, offset)
            )
            outcome = "dlq"
        except Exception as exc:  # a bug must not stop the partition: DLQ, named by its type
            # only (its text may quote a value); the log gets the frames without the text
            log_failure(logger, f"making the rows of {topic}[{partition}]@{offset} failed", exc)
            reason = failure_reason(exc, "sink")
            self._to_dlq(
                msg, RecordError(reason, code=PROCESSING_FAILED).at(topic, partition, offset)
            )
            outcome = "dlq"
        size = len(value) * MEMORY_PER_AVRO_BYTE if value else 64
        kind, stamp = msg.timestamp()
        born = None if kind == TIMESTAMP_NOT_AVAILABLE else now - (self.wall() - stamp / 1000)
        if self.batcher.add(topic, partition, offset, rows, size, now, born):
            key = (topic, outcome)
            self._counts[key] = self._counts.get(key, 0) + 1

    def _rows(self, topic: str, value: bytes, origin: Origin) -> list[TableRow] | None:
        """The record's rows; None when its user is suppressed."""
        if topic == self.identity_topic:
            link = self.codec.decode(IDENTITY_LINK, value)
            if self._suppressed(link.get("canonicalUserId"), link.get("identifier")):
                return None
            rows = [identity_row(link, origin)]
        elif topic == self.changes_topic:
            rows = [schema_change_row(self.codec.decode(SCHEMA_CHANGE, value), origin)]
        else:
            record = self.codec.decode(CLEAN_EVENT, value)
            suppressed = self._suppressed(
                record.get("userId") or record.get("canonicalUserId"),
                record.get("anonymousId"),
            ) or bool(
                record.get("canonicalUserId")
                and self._suppressed(record.get("canonicalUserId"), None)
            )
            if suppressed:
                return None
            rows = event_rows(record, origin, audit=self._audit_of(record))
        if rows:
            reason = misfits.oversized(rows, len(value))
            if reason is not None:
                self.metrics.misfits.labels(misfits.TOO_LARGE).inc()
                raise RecordError(reason, code=misfits.TOO_LARGE)
        return rows

    def count_records(self) -> None:
        """Add the records handled since the last call to their counters (one locked
        increment per topic and outcome, not one per record)."""
        for key, n in self._counts.items():
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = self.metrics.records.labels(*key)
            counter.inc(n)
        self._counts.clear()

    def _suppressed(self, user_id: object, anonymous_id: object) -> bool:
        return self.suppressions is not None and self.suppressions.is_suppressed(
            user_id, anonymous_id
        )

    def _audit_of(self, record: dict[str, Any]) -> bool:
        source = record.get("source") or ""
        audit = self._audit.get(source)
        if audit is None:
            audit = self._audit.get(schema_name(source))
        return self.settings.audit_default if audit is None else audit

    def _to_dlq(self, msg: Message, exc: RecordError) -> None:
        if self.dead_letters is None:
            raise FatalError("a record for the DLQ before the sink's producer exists")
        self.dead_letters.send(msg, exc)
