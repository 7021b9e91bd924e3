"""The processors' Faust app as configured from settings: topics, tables and producer options.

Building the app is configuration only: nothing here consumes, sends or holds state. The tables
(``dedupe``, ``identity``, ``drift``) keep a memory store (RocksDB is not installed) and a
compacted changelog each, with the raw topics' partition count, so a partition's state, output
and offsets share one transaction. Standby replicas are off: a partition that moves is rebuilt
from its changelog (see :mod:`processors.recovery`).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
from confluent_kafka.admin import AdminClient
from faust.types import EventT

from processors.dedupe import DEDUPE_TABLE
from processors.drift import DRIFT_TABLE
from processors.faust_seam import SegflowApp
from processors.settings import ProcessorSettings
from processors.stitching import IDENTITY_TABLE
from runtime.kafka_config import admin_config, faust_broker_url
from runtime.settings import KafkaSettings
from schemas.errors import FatalError, RetryableError

#: the state tables, in the order they are built (and recovered)
TABLE_NAMES = (DEDUPE_TABLE, IDENTITY_TABLE, DRIFT_TABLE)
#: the one agent, over every raw topic
AGENT_NAME = "segflow-process"


@dataclass(frozen=True)
class TopicLayout:
    """Partition counts found on the cluster at start-up."""

    raw_partitions: int
    clean_partitions: dict[str, int]
    raw_replication: int = 1


def discover_layout(kafka: KafkaSettings, timeout_s: float = 30.0) -> TopicLayout:
    """Partition counts of the raw and clean topics; FatalError when they are missing or uneven.

    The state changelogs get the raw topics' partition count, so a partition's state, output
    and offsets share one transaction, and (unless set) their replication factor, so a cluster
    that refuses writes with fewer in-sync replicas than `min.insync.replicas` keeps taking the
    changelogs' writes.
    """
    topics = kafka.topics
    try:
        metadata = AdminClient(admin_config(kafka, "process")).list_topics(timeout=timeout_s)
    except Exception as exc:
        raise RetryableError(f"cannot reach Kafka at {kafka.bootstrap}: {exc}") from exc
    missing = [t for t in topics.all_raw() + topics.all_clean() if t not in metadata.topics]
    missing += [
        t for t in (topics.identity, topics.schema_changes, topics.dlq) if t not in metadata.topics
    ]
    if missing:
        raise FatalError(f"topics missing: {', '.join(missing)}; run `segflow topics create`")
    counts = {t: len(metadata.topics[t].partitions) for t in topics.all_raw()}
    if len(set(counts.values())) != 1:
        raise FatalError(f"raw topics must have one partition count, found {counts}")
    clean = {t: len(metadata.topics[t].partitions) for t in topics.all_clean()}
    replication = min(
        len(p.replicas) for t in topics.all_raw() for p in metadata.topics[t].partitions.values()
    )
    return TopicLayout(next(iter(counts.values())), clean, max(1, replication))


def build_app(settings: ProcessorSettings, layout: TopicLayout) -> SegflowApp:
    """The Faust app (no tables, agent or tasks yet) with the producer, consumer and commit
    options of `settings`."""
    s = settings
    app = SegflowApp(
        s.app_id,
        broker=faust_broker_url(s.kafka),
        broker_client_id=f"{s.kafka.client_id}-process",
        broker_credentials=credentials(s.kafka),
        store="memory://",
        processing_guarantee=s.processing_guarantee,
        broker_commit_interval=s.commit_interval_s,
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
        broker_commit_every=max(10_000, s.batch_max * 4),
        topic_partitions=layout.raw_partitions,
        topic_replication_factor=s.changelog_replication or layout.raw_replication,
        table_standby_replicas=0,
        web_enabled=False,
        datadir=str(s.state_dir),
        stream_buffer_maxsize=max(4096, s.batch_max * 2),
        producer_linger_ms=5,
        producer_compression_type=None if s.compression == "none" else s.compression,
        producer_max_batch_size=1_048_576,
        producer_max_request_size=4_194_304,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
    )
    app.fetch_min_bytes = s.fetch_min_bytes
    app.fetch_max_wait_ms = s.fetch_max_wait_ms
    return app


def build_tables(
    app: SegflowApp,
    partitions: int,
    on_changelog_event: Callable[[EventT], Awaitable[None]],
) -> dict[str, Any]:
    """The state tables by name, each with a compacted changelog of `partitions` partitions;
    `on_changelog_event` hears of every changelog record recovery applies."""
    return {
        name: app.Table(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=partitions,
            help=f"segflow {name} state (changelog for recovery)",
            on_changelog_event=on_changelog_event,
        )
        for name in TABLE_NAMES
    }


def raw_source(app: SegflowApp, raw_topics: list[str]) -> Any:
    """The agent's source: every raw topic, keys and values as raw bytes (decoded by the agent)."""
    return app.topic(
        *raw_topics,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )


def credentials(kafka: KafkaSettings) -> Any:
    """Faust credentials for SASL/SSL settings; None for PLAINTEXT."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None
        )
    if kafka.security_protocol.startswith("SASL"):
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        return faust.SASLCredentials(
            username=kafka.sasl_username or "",
            password=password,
            mechanism=kafka.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context)
