"""Creating and checking segflow's topics with explicit partitions, retention, compaction and
replication.

Replication follows `TopicSettings`; left unset it follows the cluster: 3 replicas and
`min.insync.replicas=2` on three or more live brokers, 1 and 1 on the single local broker
(`replication_for`). Production should set both explicitly: with a broker down at creation
time the live count is lower than the cluster's size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from runtime.kafka_config import admin_config
from runtime.settings import KafkaSettings
from schemas.errors import FatalError, RetryableError
from schemas.topics import Topics

logger = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    replication_factor: int | None = None
    """None: follow the cluster (`replication_for`)."""
    min_insync_replicas: int | None = None
    """None: follow the replication factor (`replication_for`)."""


@dataclass(frozen=True)
class Replication:
    factor: int
    min_insync: int


def replication_for(
    brokers: int, factor: int | None = None, min_insync: int | None = None
) -> Replication:
    """The replication of a topic on a cluster of `brokers` live brokers.

    Unset factor: 3 when there are 3 or more brokers, else one per broker; unset min_insync:
    factor - 1, at least 1. Raises FatalError when min_insync exceeds the factor (no write
    could ever be acknowledged).
    """
    rf = factor if factor is not None else max(1, min(3, brokers))
    isr = min_insync if min_insync is not None else max(1, rf - 1)
    if isr > rf:
        raise FatalError(
            f"min.insync.replicas {isr} exceeds the replication factor {rf}: no acks=all write "
            "could succeed; lower SEGFLOW_TOPICS_MIN_INSYNC_REPLICAS"
        )
    return Replication(rf, isr)


def expected_topics(
    topics: Topics,
    partitions: int = 12,
    raw_retention_ms: int = 3 * DAY_MS,
    clean_retention_ms: int = 14 * DAY_MS,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> list[TopicSpec]:
    """Every topic of DESIGN.md. Raw topics keep raw PII, so their retention is short; so does
    the DLQ, which holds the raw bytes of the records the processors could not process (a raw
    record cannot be masked when it cannot be read, and replaying it needs it whole)."""
    deleting = {"cleanup.policy": "delete"}
    specs = [
        TopicSpec(t, partitions, {**deleting, "retention.ms": str(raw_retention_ms)})
        for t in topics.all_raw()
    ]
    specs += [
        TopicSpec(t, partitions, {**deleting, "retention.ms": str(clean_retention_ms)})
        for t in topics.all_clean()
    ]
    compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": str(HOUR_MS)}
    specs.append(TopicSpec(topics.identity, partitions, compacted))
    specs.append(TopicSpec(topics.suppressions, 1, {"cleanup.policy": "compact"}))
    specs.append(
        TopicSpec(topics.schema_changes, 1, {**deleting, "retention.ms": str(90 * DAY_MS)})
    )
    specs.append(
        TopicSpec(topics.dlq, partitions, {**deleting, "retention.ms": str(raw_retention_ms)})
    )
    return [
        replace(s, replication_factor=replication_factor, min_insync_replicas=min_insync_replicas)
        for s in specs
    ]


def _replication(spec: TopicSpec, brokers: int) -> Replication:
    return replication_for(brokers, spec.replication_factor, spec.min_insync_replicas)


def _admin(settings: KafkaSettings) -> AdminClient:
    return AdminClient(admin_config(settings))


def create_topics(
    settings: KafkaSettings, specs: list[TopicSpec], timeout_s: float = 30.0
) -> list[str]:
    """Create the missing topics; existing ones are left alone. Returns the names created."""
    admin = _admin(settings)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise RetryableError(f"cannot reach Kafka at {settings.bootstrap}: {exc}") from exc
    existing = set(metadata.topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    brokers = len(metadata.brokers)
    new = []
    for s in missing:
        rep = _replication(s, brokers)
        config = {**s.config, "min.insync.replicas": str(rep.min_insync)}
        new.append(NewTopic(s.name, s.partitions, rep.factor, config=config))
    futures = admin.create_topics(new, request_timeout=timeout_s)
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise FatalError(f"creating topic {name} failed: {exc}") from exc
    _wait_visible(admin, created, timeout_s)
    logger.info("created %d topics", len(created))
    return created


def _wait_visible(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """Wait until new topics show in metadata with leaders (creation spreads asynchronously)."""
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        topics = admin.list_topics(timeout=timeout_s).topics
        pending = {
            n
            for n in pending
            if n not in topics
            or topics[n].error is not None
            or any(p.leader < 0 for p in topics[n].partitions.values())
        }
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RetryableError(f"topics created but not visible after {timeout_s}s: {pending}")
        time.sleep(0.1)


def check_topics(
    settings: KafkaSettings, specs: list[TopicSpec], timeout_s: float = 30.0
) -> list[str]:
    """Differences between the cluster and `specs`, one readable line each (empty: all good)."""
    admin = _admin(settings)
    metadata = admin.list_topics(timeout=timeout_s)
    brokers = len(metadata.brokers)
    problems: list[str] = []
    present = []
    for spec in specs:
        topic = metadata.topics.get(spec.name)
        if topic is None or topic.error is not None:
            problems.append(f"{spec.name}: missing")
            continue
        present.append(spec)
        if len(topic.partitions) != spec.partitions:
            problems.append(
                f"{spec.name}: {len(topic.partitions)} partitions, expected {spec.partitions}"
            )
        factor = _replication(spec, brokers).factor
        replicas = sorted({len(p.replicas) for p in topic.partitions.values()})
        if replicas and replicas != [factor]:
            shown = "/".join(str(r) for r in replicas)
            problems.append(f"{spec.name}: replication factor {shown}, expected {factor}")
    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in present]
        results = admin.describe_configs(resources, request_timeout=timeout_s)
        by_name = {}
        for resource, fut in results.items():
            try:
                by_name[resource.name] = fut.result(timeout=timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
                problems.append(f"{resource.name}: missing")  # deleted since the metadata call
        for spec in present:
            if spec.name not in by_name:
                continue
            actual = by_name[spec.name]
            min_insync = str(_replication(spec, brokers).min_insync)
            for key, want in {**spec.config, "min.insync.replicas": min_insync}.items():
                got = actual[key].value if key in actual else None
                if got != want:
                    problems.append(f"{spec.name}: {key}={got}, expected {want}")
    return problems


def grow_partitions(settings: KafkaSettings, topic: str, total: int) -> None:
    """Raise a topic's partition count (Kafka cannot lower it)."""
    fut = _admin(settings).create_partitions([NewPartitions(topic, total)])[topic]
    fut.result(timeout=30)
