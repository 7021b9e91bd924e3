"""A live sample of the pipeline's events: the clean topics (masked, as the sink loads them)
and the DLQ, read without ever joining or committing a consumer group.

`LiveFeed` assigns itself every partition of the clean topics (or, with ``raw=True`` and only on
an explicit request, the raw topics, which hold unmasked PII) and of ``segment.dlq``, starting a
few records before the end, and keeps what it reads in two bounded rings (`EventRing`,
`DlqRing`). It commits nothing, so the pipeline's consumer groups never see it.

Per record it decodes only what the list needs (`summarize`: the first Avro fields, type,
messageId, source, event, name) and keeps the value's bytes; the whole record is decoded only
when someone asks for it (`EventRing.record`). DLQ entries keep their headers' reason and origin,
never the payload.

`segflow tail` and the web console share it: the console runs `LiveFeed.run` in a thread, a
terminal loop may call `LiveFeed.step` itself.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from runtime.kafka_config import common_config
from runtime.settings import KafkaSettings
from schemas.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec
from schemas.dlq import origin_headers, parse_dlq_headers
from schemas.errors import CodecError
from schemas.topics import HEADER_SOURCE, Topics

logger = logging.getLogger(__name__)

# The leading fields every event schema shares, in order: `summarize` reads only these.
SUMMARY_FIELDS: tuple[tuple[str, bool], ...] = (
    ("type", False),
    ("messageId", False),
    ("source", False),
    ("anonymousId", True),
    ("userId", True),
    ("previousId", True),
    ("groupId", True),
    ("event", True),
    ("name", True),
)
# Free-form maps that travel as JSON strings inside Avro; `record` turns them back into objects.
JSON_FIELDS = ("properties", "traits", "context", "integrations", "extra", "unmapped")


@dataclass(frozen=True)
class FeedFilter:
    """What the live view shows: a source and a call type (exact), an event name (substring,
    any case). Empty fields match everything."""

    source: str = ""
    call_type: str = ""
    event: str = ""

    def matches(self, summary: EventSummary) -> bool:
        if self.source and summary.source != self.source:
            return False
        if self.call_type and summary.call_type != self.call_type:
            return False
        return not self.event or self.event.casefold() in (summary.event or "").casefold()


@dataclass(frozen=True)
class EventSummary:
    """One line of the live view. `event` is the track event, or the page/screen name."""

    seq: int
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    call_type: str
    source: str
    message_id: str
    event: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DlqSummary:
    """One DLQ record: why and where from, never what it held."""

    seq: int
    partition: int
    offset: int
    timestamp_ms: int
    reason: str
    code: str
    origin_topic: str
    origin_partition: int
    origin_offset: int
    source: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """An Avro long (zig-zag varint) at `pos`, and the position after it."""
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


class Summarizer:
    """Reads the leading `SUMMARY_FIELDS` of a framed event record without decoding the rest;
    a record written with a schema whose leading fields differ is decoded whole (`AvroCodec`)."""

    def __init__(self, codec: AvroCodec, kind: str) -> None:
        self._codec = codec
        self._kind = kind
        self._fast: set[bytes] = {
            v.fingerprint for v in codec.versions[kind] if self._has_summary_prefix(v.schema)
        }

    @staticmethod
    def _has_summary_prefix(schema: Mapping[str, Any]) -> bool:
        fields = schema.get("fields", [])
        if len(fields) < len(SUMMARY_FIELDS):
            return False
        for (name, optional), field in zip(SUMMARY_FIELDS, fields, strict=False):
            expected: Any = ["null", "string"] if optional else "string"
            if field.get("name") != name or field.get("type") != expected:
                return False
        return True

    def fields(self, data: bytes) -> dict[str, str | None]:
        """The summary fields of one record (CodecError if it is not a readable event)."""
        if len(data) > 10 and data[2:10] in self._fast:
            try:
                return self._read_prefix(data)
            except (IndexError, ValueError, UnicodeDecodeError) as exc:
                raise CodecError("event record truncated or garbled", raw=data) from exc
        record = self._codec.decode(self._kind, data, micros=True)
        return {name: record.get(name) for name, _ in SUMMARY_FIELDS}

    @staticmethod
    def _read_prefix(data: bytes) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        pos = 10
        for name, optional in SUMMARY_FIELDS:
            if optional:
                branch, pos = _varint(data, pos)
                if branch == 0:
                    out[name] = None
                    continue
                if branch != 1:
                    raise ValueError("bad union branch")
            length, pos = _varint(data, pos)
            if length < 0 or pos + length > len(data):
                raise ValueError("bad string length")
            out[name] = data[pos : pos + length].decode()
            pos += length
        return out


def summarize(
    fields: Mapping[str, str | None],
    *,
    seq: int,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
) -> EventSummary:
    """The live view's line for a record whose summary `fields` were read."""
    call_type = fields.get("type") or topic.rsplit(".", 1)[-1]
    event = fields.get("event") if call_type == "track" else fields.get("name")
    return EventSummary(
        seq=seq,
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp_ms,
        call_type=call_type,
        source=fields.get("source") or "",
        message_id=fields.get("messageId") or "",
        event=event,
    )


def readable_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded event as JSON: its JSON-string maps parsed, its timestamps ISO-8601."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in JSON_FIELDS and isinstance(value, str):
            try:
                out[key] = json.loads(value) if value else {}
            except ValueError:
                out[key] = value
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def dlq_summary(
    headers: Any, *, seq: int, partition: int, offset: int, timestamp_ms: int
) -> DlqSummary:
    """A DLQ record's line from its headers alone (`schemas.dlq`); the value is never read."""
    entry = parse_dlq_headers(headers)
    own = dict(entry.origin if entry is not None else origin_headers(headers))
    source = own.get(HEADER_SOURCE, b"").decode(errors="replace")
    where = dict(seq=seq, partition=partition, offset=offset, timestamp_ms=timestamp_ms)
    if entry is None:
        return DlqSummary(
            **where,
            reason="(no complete DLQ headers)",
            code="unknown",
            origin_topic="",
            origin_partition=-1,
            origin_offset=-1,
            source=source,
        )
    return DlqSummary(
        **where,
        reason=entry.reason,
        code=entry.code,
        origin_topic=entry.topic,
        origin_partition=entry.partition,
        origin_offset=entry.offset,
        source=source,
    )


class _Seq:
    def __init__(self) -> None:
        self._next = 0

    def take(self) -> int:
        self._next += 1
        return self._next


class EventRing:
    """The last `capacity` events (summary and value bytes), oldest first; thread-safe."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: deque[tuple[EventSummary, bytes]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, summary: EventSummary, value: bytes) -> None:
        with self._lock:
            self._items.append((summary, value))

    def __len__(self) -> int:
        return len(self._items)

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._items[-1][0].seq if self._items else 0

    def since(
        self, after_seq: int, flt: FeedFilter = FeedFilter(), limit: int = 200
    ) -> list[EventSummary]:
        """The newest `limit` summaries after `after_seq` that `flt` matches, oldest first."""
        with self._lock:
            items = list(self._items)
        out: list[EventSummary] = []
        for summary, _ in reversed(items):
            if summary.seq <= after_seq or len(out) >= limit:
                break
            if flt.matches(summary):
                out.append(summary)
        out.reverse()
        return out

    def value(self, seq: int) -> tuple[EventSummary, bytes] | None:
        """The summary and bytes of event `seq`, or None once it left the ring."""
        with self._lock:
            if not self._items:
                return None
            index = seq - self._items[0][0].seq
            if 0 <= index < len(self._items) and self._items[index][0].seq == seq:
                return self._items[index]
        return None


class DlqRing:
    """The last `capacity` DLQ entries, oldest first; thread-safe."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._items: deque[DlqSummary] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, entry: DlqSummary) -> None:
        with self._lock:
            self._items.append(entry)

    def entries(self) -> list[DlqSummary]:
        with self._lock:
            return list(self._items)

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._items[-1].seq if self._items else 0


class FeedConsumer(Protocol):
    """What `LiveFeed` uses of confluent-kafka's Consumer."""

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]: ...
    def incremental_assign(self, partitions: list[TopicPartition]) -> None: ...
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]: ...
    def close(self) -> None: ...


def feed_consumer_config(kafka: KafkaSettings) -> dict[str, Any]:
    """A consumer that never joins or commits a group: it is assigned partitions directly.
    The group id is unique and only satisfies the client; nothing is ever stored under it."""
    conf = common_config(kafka, "observe-feed")
    conf.update(
        {
            "group.id": f"segflow-observe-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 200,
        }
    )
    return conf


class LiveFeed:
    """Reads the clean topics (or, explicitly, the raw ones) and the DLQ into bounded rings."""

    RECHECK_S = 10.0

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        capacity: int = 500,
        dlq_capacity: int = 500,
        backlog: int = 20,
        dlq_backlog: int = 500,
        raw: bool = False,
        include_dlq: bool = True,
        consumer_factory: Callable[[dict[str, Any]], FeedConsumer] = Consumer,
    ) -> None:
        topics: Topics = kafka.topics
        self.raw = raw
        self.event_topics = topics.all_raw() if raw else topics.all_clean()
        self.dlq_topic = topics.dlq if include_dlq else None
        self.events = EventRing(capacity)
        self.dlq = DlqRing(dlq_capacity)
        self.backlog = max(0, backlog)
        self.dlq_backlog = max(0, dlq_backlog)
        self._codec = AvroCodec()
        self._summarizer = Summarizer(self._codec, RAW_EVENT if raw else CLEAN_EVENT)
        self._kind = RAW_EVENT if raw else CLEAN_EVENT
        self._consumer = consumer_factory(feed_consumer_config(kafka))
        self._assigned: set[tuple[str, int]] = set()
        self._next_check = 0.0
        self._seq = _Seq()
        self._dlq_seq = _Seq()
        self._stop = threading.Event()
        self.skipped = 0  # records that were not readable events

    # -- assignment -------------------------------------------------------------------------

    def _wanted(self) -> Iterable[tuple[str, int]]:
        names = [*self.event_topics, *([self.dlq_topic] if self.dlq_topic else [])]
        meta = self._consumer.list_topics(timeout=5.0)
        for name in names:
            topic = meta.topics.get(name)
            if topic is None or topic.error is not None:
                continue
            for partition in topic.partitions:
                yield name, int(partition)

    def assign_new(self) -> int:
        """Assign every partition not yet assigned, `backlog` records before its end (the DLQ:
        `dlq_backlog`); returns how many were added. Never joins a group."""
        fresh: list[TopicPartition] = []
        for key in self._wanted():
            if key in self._assigned:
                continue
            back = self.dlq_backlog if key[0] == self.dlq_topic else self.backlog
            offset = OFFSET_END
            if back:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(*key), timeout=5.0)
                offset = max(low, high - back)
            fresh.append(TopicPartition(key[0], key[1], offset))
            self._assigned.add(key)
        if fresh:
            self._consumer.incremental_assign(fresh)
        return len(fresh)

    # -- reading ----------------------------------------------------------------------------

    def step(self, timeout: float = 0.5, max_records: int = 500) -> int:
        """Read one batch into the rings; returns the number of records read."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.RECHECK_S
            try:
                self.assign_new()
            except KafkaException as exc:
                logger.warning("live feed: cannot list topics yet (%s); retrying", exc)
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout)
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("live feed: %s", err)
                continue
            self._take(msg)
        return len(messages)

    def _take(self, msg: Any) -> None:
        _, ts = msg.timestamp()
        topic = msg.topic()
        if topic == self.dlq_topic:
            self.dlq.add(
                dlq_summary(
                    msg.headers(),
                    seq=self._dlq_seq.take(),
                    partition=msg.partition(),
                    offset=msg.offset(),
                    timestamp_ms=ts,
                )
            )
            return
        value = msg.value()
        if value is None:
            return
        try:
            fields = self._summarizer.fields(value)
        except CodecError:
            self.skipped += 1
            return
        self.events.add(
            summarize(
                fields,
                seq=self._seq.take(),
                topic=topic,
                partition=msg.partition(),
                offset=msg.offset(),
                timestamp_ms=ts,
            ),
            value,
        )

    def record(self, seq: int) -> dict[str, Any] | None:
        """Event `seq` decoded whole (the clean record, as the sink loads it), or None."""
        found = self.events.value(seq)
        if found is None:
            return None
        try:
            decoded = self._codec.decode(self._kind, found[1])
        except CodecError:
            return None
        return readable_record(decoded)

    def run(self) -> None:
        """Read until `stop` is called (the console runs this in a thread)."""
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                except KafkaException as exc:
                    logger.warning("live feed: %s; retrying", exc)
                    self._stop.wait(1.0)
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
