"""One view of a running pipeline: components, consumer lag, DLQ, warehouse, suppressions.

`collect` gathers every part at once, each in a daemon thread, and waits at most `timeout_s`:
a dead component, an unreachable broker or warehouse becomes a line of the result, never a hang
or a traceback. `judge` (pure) turns the parts into problems:

- a component that does not answer, is not live or not ready;
- a consumer group lagging more than ``max_lag`` records on one topic, or unknown to Kafka;
- the DLQ holding a record that arrived within ``dlq_window_s`` (0: any record at all): a DLQ
  that is not empty but quiet is past trouble, reported but not unhealthy;
- a table whose newest load is older than ``max_freshness_s`` (when set).

Exit codes (`PipelineStatus.exit_code`): 0 healthy; 1 something checked is unhealthy; 2 nothing
checked is unhealthy but some part could not be checked (no answer in time, broker or warehouse
unreachable), so health is unknown.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from observe.components import ComponentHealth, probe
from observe.deadletters import (
    DlqStatus,
    depth_by_partition,
    newest_first,
    read_tail_headers,
)
from observe.lag import GroupLag, read_group_lag
from observe.settings import StatusSettings
from observe.warehouse import SessionCursor, TableLoad, table_loads
from runtime.group_offsets import read_end_offsets
from runtime.kafka_config import admin_config, common_config
from runtime.suppressions import SuppressionList
from sinks.snowflake.schema_review import ChangeSummary, summarize_changes
from sinks.snowflake.session import WarehouseSession

# librdkafka's own lines (a broker down, retries) go to this logger: the status reports the
# failure itself, so `segflow status` silences it.
KAFKA_LOGGER = "observe.kafka"

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_UNKNOWN = 0, 1, 2
# Schema changes counted over this window; the newest few are listed.
SCHEMA_CHANGES_WINDOW = timedelta(hours=24)
SCHEMA_CHANGES_SHOWN = 5


@dataclass(frozen=True)
class Thresholds:
    max_lag: int
    dlq_window_s: float
    max_freshness_s: float | None

    @classmethod
    def of(cls, settings: StatusSettings) -> Thresholds:
        return cls(settings.max_lag, settings.dlq_window_s, settings.max_freshness_s)


@dataclass(frozen=True)
class PipelineStatus:
    """What `collect` found. A part that could not be checked is None and named in
    `unchecked` with the reason."""

    checked_at: datetime
    components: tuple[ComponentHealth, ...] = ()
    groups: tuple[GroupLag, ...] = ()
    dlq: DlqStatus | None = None
    tables: tuple[TableLoad, ...] | None = None
    schema_changes: tuple[ChangeSummary, ...] | None = None
    suppressed_users: int | None = None
    problems: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.problems:
            return EXIT_UNHEALTHY
        return EXIT_UNKNOWN if self.unchecked else EXIT_HEALTHY

    @property
    def healthy(self) -> bool:
        return self.exit_code == EXIT_HEALTHY

    def to_dict(self) -> dict[str, Any]:
        now = self.checked_at
        return {
            "checked_at": now.isoformat(),
            "healthy": self.healthy,
            "exit_code": self.exit_code,
            "problems": list(self.problems),
            "unchecked": list(self.unchecked),
            "components": [c.to_dict() for c in self.components],
            "groups": [g.to_dict() for g in self.groups],
            "dlq": None if self.dlq is None else self.dlq.to_dict(),
            "tables": None if self.tables is None else [t.to_dict(now) for t in self.tables],
            "schema_changes": (
                None
                if self.schema_changes is None
                else {
                    "window_hours": SCHEMA_CHANGES_WINDOW.total_seconds() / 3600,
                    "count": len(self.schema_changes),
                    "occurrences": sum(c.occurrences for c in self.schema_changes),
                    "newest": [c.as_json() for c in self.schema_changes[:SCHEMA_CHANGES_SHOWN]],
                }
            ),
            "suppressed_users": self.suppressed_users,
        }


def judge(
    components: tuple[ComponentHealth, ...],
    groups: tuple[GroupLag, ...],
    dlq: DlqStatus | None,
    tables: tuple[TableLoad, ...] | None,
    thresholds: Thresholds,
    now: datetime,
) -> list[str]:
    """The problems the parts show, one sentence each, in the order of the screen."""
    problems = [f"{c.name} is {c.state}: {c.detail}".rstrip(": ") for c in components if not c.ok]
    for g in groups:
        if g.state == "missing":
            problems.append(f"consumer group {g.group} is unknown to Kafka (never committed)")
            continue
        for topic, lag in g.by_topic().items():
            if lag > thresholds.max_lag:
                problems.append(
                    f"consumer group {g.group} lags {lag} records on {topic} "
                    f"(more than {thresholds.max_lag})"
                )
    if dlq is not None and dlq.depth > 0:
        newest = dlq.newest_at
        if thresholds.dlq_window_s == 0:
            problems.append(f"DLQ {dlq.topic} holds {dlq.depth} records")
        elif newest is not None and (now - newest).total_seconds() <= thresholds.dlq_window_s:
            problems.append(
                f"DLQ {dlq.topic} received records within {thresholds.dlq_window_s:g} s "
                f"(newest {newest.isoformat(timespec='seconds')}; {dlq.depth} held)"
            )
    if tables is not None and thresholds.max_freshness_s is not None:
        for t in tables:
            fresh = t.freshness_s(now)
            if fresh is not None and fresh > thresholds.max_freshness_s:
                problems.append(
                    f"{t.schema}.{t.table} last loaded {fresh:.0f} s ago "
                    f"(more than {thresholds.max_freshness_s:g} s)"
                )
    return problems


class _Task:
    """A function run in a daemon thread: its value, its error, or nothing yet."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        self.name = name
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._fn = fn
        threading.Thread(target=self._run, name=f"status-{name}", daemon=True).start()

    def _run(self) -> None:
        try:
            self.value = self._fn()
        except BaseException as exc:  # reported as unchecked by `collect`
            self.error = exc
        finally:
            self.done.set()

    def outcome(self, deadline: float) -> tuple[Any, str | None]:
        """(value, None) or (None, why it is unknown)."""
        if not self.done.wait(max(0.0, deadline - time.monotonic())):
            return None, f"{self.name}: no answer in time"
        if self.error is not None:
            return None, f"{self.name}: {_error_text(self.error)}"
        return self.value, None


def _error_text(exc: BaseException) -> str:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    raw = err.str() if isinstance(err, KafkaError) else str(exc)
    text = " ".join(raw.split()) or type(exc).__name__
    return text[:300]


def _kafka_conf(settings: StatusSettings) -> dict[str, Any]:
    conf = admin_config(settings.kafka, "status")
    conf["logger"] = logging.getLogger(KAFKA_LOGGER)
    return conf


def default_components(settings: StatusSettings) -> dict[str, str]:
    return {
        "edge": settings.edge_url,
        "processors": settings.processors_url,
        "sink": settings.sink_url,
    }


def collect(
    settings: StatusSettings,
    *,
    components: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PipelineStatus:
    """Check everything at once, within `timeout_s` (default: the settings'). `components`
    (name -> base URL) replaces the default three."""
    budget = settings.timeout_s if timeout_s is None else timeout_s
    started = time.monotonic()
    deadline = started + budget
    # the broker is asked for its metadata first: when it does not answer, the Kafka parts
    # are one unknown line rather than three
    kafka = _Task("kafka", lambda: _kafka_parts(settings, deadline))
    probes = [
        _Task(f"component {name}", partial(probe, name, url, min(2.0, budget)))
        for name, url in (components or default_components(settings)).items()
    ]
    warehouse = (
        _Task("warehouse", lambda: _warehouse_part(settings, budget, now()))
        if settings.warehouse_check
        else None
    )
    unchecked: list[str] = []
    found: list[ComponentHealth] = []
    for task in probes:
        value, why = task.outcome(deadline)
        if why is None:
            found.append(value)
        else:
            unchecked.append(why)
    parts, why = kafka.outcome(deadline + 0.5)  # a little more: it checks within `deadline`
    if why is not None:
        unchecked.append(why)
        parts = _KafkaParts()
    unchecked += parts.unchecked
    tables: tuple[TableLoad, ...] | None = None
    changes: tuple[ChangeSummary, ...] | None = None
    if warehouse is not None:
        value, why = warehouse.outcome(deadline)
        if why is None:
            tables, changes = value
        else:
            unchecked.append(why)
    checked_at = now()
    components_found = tuple(found)
    return PipelineStatus(
        checked_at=checked_at,
        components=components_found,
        groups=parts.groups,
        dlq=parts.dlq,
        tables=tables,
        schema_changes=changes,
        suppressed_users=parts.suppressed_users,
        problems=judge(
            components_found, parts.groups, parts.dlq, tables, Thresholds.of(settings), checked_at
        ),
        unchecked=unchecked,
    )


@dataclass
class _KafkaParts:
    groups: tuple[GroupLag, ...] = ()
    dlq: DlqStatus | None = None
    suppressed_users: int | None = None
    unchecked: list[str] = field(default_factory=list)


def _kafka_parts(settings: StatusSettings, deadline: float) -> _KafkaParts:
    """Lag of both groups, the DLQ and the suppression count, each in its own thread."""
    admin = AdminClient(_kafka_conf(settings))
    remaining = max(0.1, deadline - time.monotonic())
    try:
        metadata = admin.list_topics(timeout=remaining)
    except KafkaException as exc:
        raise ConnectionError(
            f"no answer from {settings.kafka.bootstrap}: {_error_text(exc)}"
        ) from exc
    topics = settings.kafka.topics
    wait = max(0.1, deadline - time.monotonic())
    group_tasks = [
        _Task(f"consumer group {g}", partial(read_group_lag, admin, g, wait))
        for g in (settings.processors_group, settings.sink_group)
    ]
    dlq_meta = metadata.topics.get(topics.dlq)
    dlq_task = (
        _Task("DLQ", lambda: read_dlq(settings, admin, sorted(dlq_meta.partitions), deadline))
        if dlq_meta is not None and dlq_meta.error is None
        else None
    )
    suppressions = (
        _Task("suppressions", lambda: count_suppressed(settings, deadline))
        if topics.suppressions in metadata.topics
        else None
    )
    parts = _KafkaParts()
    groups = []
    for task in group_tasks:
        value, why = task.outcome(deadline)
        if why is None:
            groups.append(value)
        else:
            parts.unchecked.append(why)
    parts.groups = tuple(groups)
    if dlq_task is None:
        parts.unchecked.append(f"DLQ: topic {topics.dlq} does not exist")
    else:
        parts.dlq, why = dlq_task.outcome(deadline)
        if why is not None:
            parts.unchecked.append(why)
    if suppressions is None:
        parts.unchecked.append(f"suppressions: topic {topics.suppressions} does not exist")
    else:
        parts.suppressed_users, why = suppressions.outcome(deadline)
        if why is not None:
            parts.unchecked.append(why)
    return parts


def read_dlq(
    settings: StatusSettings, admin: AdminClient, partitions: list[int], deadline: float
) -> DlqStatus:
    """Depth per partition and the newest reasons (the last few records of each partition)."""
    topic = settings.kafka.topics.dlq
    wait = max(0.1, deadline - time.monotonic())
    keys = [(topic, p) for p in partitions]
    starts = {p: o for (_, p), o in read_end_offsets(admin, keys, wait, earliest=True).items()}
    ends = {p: o for (_, p), o in read_end_offsets(admin, keys, wait).items()}
    reasons = []
    if settings.dlq_reasons > 0 and any(ends[p] > starts.get(p, 0) for p in ends):
        consumer = Consumer(_reader_conf(settings))
        try:
            found = read_tail_headers(
                consumer, topic, starts, ends, settings.dlq_reasons, deadline - 0.2
            )
        finally:
            consumer.close()
        reasons = list(newest_first(found, settings.dlq_reasons))
    return DlqStatus(topic, depth_by_partition(starts, ends), tuple(reasons))


def _reader_conf(settings: StatusSettings) -> dict[str, Any]:
    """A consumer that is assigned partitions, never joins its (unique) group, never commits."""
    conf = common_config(settings.kafka, "status")
    conf.update(
        {
            "group.id": f"segflow-status-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": "read_uncommitted",
            "logger": logging.getLogger(KAFKA_LOGGER),
        }
    )
    return conf


def count_suppressed(settings: StatusSettings, deadline: float) -> int:
    """Users on the suppression list (read from its compacted topic, as the components do)."""
    suppressions = SuppressionList(settings.kafka).start()
    try:
        if not suppressions.wait_ready(max(0.1, deadline - time.monotonic())):
            error = suppressions.error
            raise TimeoutError(
                f"not read to its end in time{f' ({error})' if error is not None else ''}"
            )
        return len(suppressions)
    finally:
        suppressions.stop()


def _warehouse_part(
    settings: StatusSettings, budget: float, now: datetime
) -> tuple[tuple[TableLoad, ...], tuple[ChangeSummary, ...]]:
    """Each table's last load, and the schema changes of the last 24 hours (newest first)."""
    timeout = max(1, int(budget))
    warehouse = settings.warehouse.model_copy(
        update={"login_timeout_s": timeout, "network_timeout_s": timeout}
    )
    with WarehouseSession(warehouse, "status", create_database=False) as session:
        tables = table_loads(session.fetch_all, settings.control_schema)
        changes = summarize_changes(SessionCursor(session), since=SCHEMA_CHANGES_WINDOW, now=now)
    return tuple(tables), tuple(changes)
