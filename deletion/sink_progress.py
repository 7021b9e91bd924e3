"""How far the sinks have loaded, against a point in the topics: `segflow forget`'s barrier.

After a suppression is published, `forget` takes the *data ends* of the topics the sinks load
(segment.events.* and segment.identity): per partition, the offset after its last committed
record. The sinks' offsets in the warehouse (`_segflow_offsets`, the next offset each group will
load) are then polled until every group has passed every data end; only then is the final
deletion pass run, so no batch decoded before the suppression can land after it.

Why data ends and not the high watermarks: the clean topics are written in Kafka transactions,
and the offset after a partition's last record is a commit marker the sink never loads, so its
stored offset stops at the last record + 1. The data end is found by reading (read_committed)
the tail of each partition; a transaction still open at the end is waited for (bounded).

Defined cases:
- a partition with no committed record (empty, or only aborted data and markers) needs no sink;
- a sink group with no row for a partition that has data is behind on it (it has not loaded it
  yet; rows are created when a partition is first assigned, with -1);
- the groups waited for are those given, else every group of `_segflow_offsets` that has a row
  for one of these topics. When no group has any, no sink has ever loaded them: there is nothing
  to wait for.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from runtime.kafka_config import common_config
from runtime.settings import KafkaSettings
from schemas.errors import FatalError, RetryableError
from schemas.topics import PartitionKey
from sinks.snowflake.ddl import qualified
from sinks.snowflake.session import WarehouseSession
from sinks.snowflake.tables import OFFSETS

logger = logging.getLogger(__name__)

FIRST_WINDOW = 1_000  # records read back from the high watermark to find the last record
SCAN_TIMEOUT_S = 60.0  # an open transaction at a partition's end is waited for this long


@dataclass(frozen=True)
class Lag:
    """A sink group behind a data end on one partition (stored None: no row)."""

    group: str
    topic: str
    partition: int
    stored: int | None
    end: int

    def describe(self) -> str:
        at = "nothing loaded" if self.stored is None or self.stored < 0 else f"at {self.stored}"
        return f"group {self.group}: {self.topic}[{self.partition}] {at}, needs {self.end}"


def behind(
    ends: Mapping[PartitionKey, int],
    stored: Mapping[str, Mapping[PartitionKey, int]],
    groups: Sequence[str],
) -> list[Lag]:
    """Every (group, partition) whose stored next offset is below the partition's data end."""
    out: list[Lag] = []
    for group in groups:
        offsets = stored.get(group, {})
        for (topic, partition), end in sorted(ends.items()):
            if end <= 0:
                continue
            have = offsets.get((topic, partition))
            if have is None or have < end:
                out.append(Lag(group, topic, partition, have, end))
    return out


def groups_to_wait_for(
    given: Sequence[str], stored: Mapping[str, Mapping[PartitionKey, int]], topics: Sequence[str]
) -> list[str]:
    """The groups given, else every group with a row for one of `topics`."""
    if given:
        return list(dict.fromkeys(given))
    wanted = set(topics)
    return sorted(g for g, rows in stored.items() if any(t in wanted for t, _ in rows))


# -- Kafka: the data ends ---------------------------------------------------------------------
def data_ends(
    kafka: KafkaSettings, topics: Sequence[str], *, timeout_s: float = SCAN_TIMEOUT_S
) -> dict[PartitionKey, int]:
    """Per partition of `topics`, the offset after its last committed record (0 when none)."""
    conf = common_config(kafka, "forget")
    conf.update(
        {
            "group.id": f"segflow-forget-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer = Consumer(conf)
    try:
        marks: dict[PartitionKey, tuple[int, int]] = {}
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                raise FatalError(f"topic {topic} is missing: run `segflow topics create`")
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                marks[(topic, p)] = (int(low), int(high))
        ends = {tp: 0 for tp in marks}
        window = FIRST_WINDOW
        todo = {tp: m for tp, m in marks.items() if m[1] > m[0]}
        while todo:
            found = _scan(consumer, todo, window, timeout_s)
            ends.update({tp: off + 1 for tp, off in found.items()})
            # partitions whose window held no committed record and that have more before it
            todo = {
                tp: (low, high)
                for tp, (low, high) in todo.items()
                if tp not in found and high - window > low
            }
            window *= 10
        return ends
    except KafkaException as exc:
        raise RetryableError(f"reading the ends of the sinks' topics: {exc}") from exc
    finally:
        consumer.close()


def _scan(
    consumer: Consumer, marks: Mapping[PartitionKey, tuple[int, int]], window: int, timeout_s: float
) -> dict[PartitionKey, int]:
    """The offset of the last committed record below each high watermark, read from
    `window` records before it (partitions with none there are left out)."""
    consumer.assign(
        [TopicPartition(t, p, max(low, high - window)) for (t, p), (low, high) in marks.items()]
    )
    last: dict[PartitionKey, int] = {}
    pending = set(marks)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        key = (str(msg.topic()), int(msg.partition() or 0))
        high = marks.get(key, (0, 0))[1]
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                if int(msg.offset() or 0) >= high:
                    pending.discard(key)
                continue  # else an open transaction holds the end back: wait for it
            if err.fatal():
                raise RetryableError(f"reading {key[0]}[{key[1]}]: {err.str()}")
            continue
        offset = int(msg.offset() or 0)
        if offset < high:
            last[key] = offset
        if offset >= high - 1:
            pending.discard(key)
    consumer.unassign()
    if pending:
        logger.warning(
            "%d partitions still had an open transaction at their end after %.0f s; their "
            "ends are taken before it",
            len(pending),
            timeout_s,
        )
    return last


# -- the warehouse: the sinks' offsets --------------------------------------------------------
def stored_offsets(
    session: WarehouseSession, control_schema: str
) -> dict[str, dict[PartitionKey, int]]:
    """group -> (topic, partition) -> next offset, from `_segflow_offsets` (empty if absent)."""
    exists = session.fetch_all(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [control_schema.upper(), OFFSETS.upper()],
    )
    if not exists or not int(exists[0][0]):
        return {}
    rows = session.fetch_all(
        f'SELECT "CONSUMER_GROUP", "TOPIC", "PARTITION", MAX("NEXT_OFFSET") '
        f'FROM {qualified(control_schema, OFFSETS)} GROUP BY "CONSUMER_GROUP", "TOPIC", "PARTITION"'
    )
    out: dict[str, dict[PartitionKey, int]] = {}
    for group, topic, partition, offset in rows:
        out.setdefault(str(group), {})[(str(topic), int(partition))] = int(offset)
    return out


class SinkBarrierError(FatalError):
    """The sinks did not pass the suppression's data ends in time."""


def wait_for_sinks(
    read: Callable[[], dict[str, dict[PartitionKey, int]]],
    ends: Mapping[PartitionKey, int],
    groups: Sequence[str],
    *,
    timeout_s: float,
    poll_s: float = 1.0,
    report_every_s: float = 10.0,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Poll the sinks' offsets until every group waited for has passed every data end; the
    groups waited for. Raises SinkBarrierError naming what is behind after `timeout_s`."""
    topics = sorted({t for t, _ in ends})
    started = clock()
    last_report = started
    while True:
        stored = read()
        waited = groups_to_wait_for(groups, stored, topics)
        if not waited:
            say("no sink group has loaded these topics: nothing to wait for")
            return []
        lags = behind(ends, stored, waited)
        if not lags:
            return waited
        now = clock()
        if now - started >= timeout_s:
            shown = "; ".join(lag.describe() for lag in lags[:10])
            more = f" and {len(lags) - 10} more" if len(lags) > 10 else ""
            raise SinkBarrierError(
                f"after {timeout_s:g} s, {len(lags)} sink partitions had not loaded up to the "
                f"suppression: {shown}{more}. Rows decoded before it may still land. Check that "
                "the sinks run and catch up (consumer lag), or pass --forget-sink-groups to skip "
                "retired groups; then run the same forget again (it is idempotent)"
            )
        if now - last_report >= report_every_s:
            last_report = now
            say(
                f"waiting for the sinks: {len(lags)} partitions behind "
                f"({lags[0].describe()}), {now - started:.0f} s of {timeout_s:g} s"
            )
        sleep(poll_s)
