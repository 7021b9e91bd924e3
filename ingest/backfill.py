"""Backfill: archived Segment events -> the raw topics, the same path as live traffic.

Each archived line goes through the edge's own validation and normalization
(ingest.validation.validate_event, ingest.normalize.record_or_problem) and its Avro writer, so
backfilled events are masked, stitched and deduplicated downstream exactly like live ones.
Differences from the edge, and why:

- ``receivedAt`` and ``timestamp`` are kept as archived (Segment set and skew-corrected them);
- an event without a messageId gets one derived from its bytes, so a rerun does not duplicate;
- a bad line does not stop the run: it is counted and its file:line reported (never its content);
- suppressed (forgotten) users are dropped, as the edge drops them.

Exactly once: the producer is idempotent (acks=all); the checkpoint (ingest/checkpoint.py) moves
only after Kafka acknowledged every event before it; what is sent again after a crash carries
the same messageIds, which the processors and the sink deduplicate.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ingest.archive import ArchiveFile, ArchiveStore, read_lines
from ingest.checkpoint import Checkpoint
from ingest.limits import fields_problem, shape_problem
from ingest.normalize import record_key, record_or_problem, utc
from ingest.rejections import ItemProblem
from ingest.settings import EventLimitsSettings
from ingest.validation import EventFields, parse_json, validate_event
from runtime.kafka_config import producer_config
from runtime.rate_limit import RateLimiter
from runtime.settings import KafkaSettings, ObservabilitySettings, SegflowSettings
from schemas.avro_compiled import compile_writer
from schemas.codec import RAW_EVENT, AvroCodec
from schemas.errors import ConfigError, RetryableError
from schemas.segment import DEFAULT_LIMITS, EventLimits
from schemas.timestamps import parse_timestamp
from schemas.topics import HEADER_REQUEST_ID, HEADER_SOURCE, Topics

logger = logging.getLogger(__name__)


class BackfillSettings(SegflowSettings):
    """`segflow backfill`: where the archive is, how fast to send it, where the checkpoint is."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_BACKFILL_")

    rate_limit_per_s: float | None = Field(
        None, gt=0, description="Most events a second sent to Kafka; unset = as fast as it goes"
    )
    checkpoint_path: Path | None = Field(
        None, description="Checkpoint file; default: segflow-backfill-<hash of PATH>.jsonl here"
    )
    checkpoint_every: int = Field(
        20_000, gt=0, description="Events between checkpoints inside a file"
    )
    produce_timeout_s: float = Field(
        60.0, gt=0, description="Seconds to wait for Kafka to acknowledge a checkpoint's events"
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint for s3:// paths; unset = AWS"
    )
    s3_region: str | None = Field(None, description="S3 region for s3:// paths")
    honour_suppressions: bool = Field(
        True, description="Drop events of users on the suppression list, as the edge does"
    )
    suppressions_wait_s: float = Field(
        30.0, ge=0, description="Seconds to wait for the suppression list to load"
    )

    limits: EventLimitsSettings = Field(default_factory=EventLimitsSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    def checkpoint_for(self, location: str) -> Path:
        if self.checkpoint_path is not None:
            return self.checkpoint_path
        digest = hashlib.sha256(location.rstrip("/").encode()).hexdigest()[:12]
        return Path(f"segflow-backfill-{digest}.jsonl")


class SuppressionCheck(Protocol):
    def is_suppressed(self, user_id: object = None, anonymous_id: object = None) -> bool: ...


@dataclass(frozen=True)
class Converted:
    call_type: str
    key: bytes
    record: dict[str, Any]
    fields: EventFields


def derived_message_id(line: bytes) -> str:
    """A stable messageId for an archived event that has none."""
    return "backfill-" + hashlib.sha256(line).hexdigest()[:40]


def convert_line(
    line: bytes, source: str, now: datetime, limits: EventLimits = DEFAULT_LIMITS
) -> Converted | ItemProblem | None:
    """One archived line -> a raw_event record (None for a blank line).

    The edge's limits apply (ingest/limits.py): a line past them is an invalid line."""
    if not line.strip():
        return None
    try:
        item = parse_json(line)
    except orjson.JSONDecodeError:
        return ItemProblem(0, "invalid_json", "line is not JSON")
    if type(item) is not dict:
        return ItemProblem(0, "not_an_object", "line is not a JSON object")
    shape = shape_problem(item, limits)
    if shape is not None:
        return shape
    if not item.get("messageId"):
        item["messageId"] = derived_message_id(line)
    fields = validate_event(item)
    if isinstance(fields, ItemProblem):
        return fields
    bounds = fields_problem(fields, limits)
    if bounds is not None:
        return bounds
    try:
        received = parse_timestamp(item.get("receivedAt"))
    except (ValueError, OverflowError):
        received = None  # kept in `extra` as sent
    if received is not None:
        del item["receivedAt"]  # it becomes the record's receivedAt, not an extra field
    try:
        received_at = received or utc(fields.timestamp) or utc(fields.original_timestamp) or now
    except OverflowError:  # year 1 or 9999 with an offset that crosses the calendar's end
        return ItemProblem(0, "invalid_timestamp", "timestamps out of range in UTC", "timestamp")
    record = record_or_problem(item, fields, 0, source, received_at, None, trust_timestamp=True)
    if isinstance(record, ItemProblem):
        return record
    return Converted(fields.type, record_key(record), record, fields)


def is_suppressed(check: SuppressionCheck, fields: EventFields) -> bool:
    if check.is_suppressed(fields.user_id, fields.anonymous_id):
        return True
    return fields.previous_id is not None and check.is_suppressed(fields.previous_id, None)


def select_files(
    files: Iterable[ArchiveFile],
    sources: dict[str, str],
    day_from: date | None,
    day_to: date | None,
) -> list[ArchiveFile]:
    """Files of the wanted sources (folder -> source name) within [day_from, day_to]."""
    return [
        f
        for f in files
        if f.source_folder in sources
        and (day_from is None or f.day >= day_from)
        and (day_to is None or f.day <= day_to)
    ]


def source_names(
    folders: Iterable[str], mapping: dict[str, str], only: set[str] | None, known: set[str]
) -> dict[str, str]:
    """folder -> source name (mapped, else the folder's own name), restricted to `only`.

    A source the rules file does not know is a configuration error: its events would be
    loaded under a schema nobody configured."""
    out: dict[str, str] = {}
    for folder in sorted(set(folders)):
        name = mapping.get(folder, folder)
        if only and name not in only and folder not in only:
            continue
        if name not in known:
            raise ConfigError(
                f"archive folder {folder!r} maps to source {name!r}, which the rules file does "
                f"not define (known: {sorted(known)}); map it with --source-map {folder}=NAME"
            )
        out[folder] = name
    return out


@dataclass
class BackfillReport:
    files: int = 0
    files_skipped: int = 0
    events: int = 0
    sent: int = 0
    suppressed: int = 0
    invalid: int = 0
    invalid_at: list[str] = field(default_factory=list)
    by_call_type: dict[str, int] = field(default_factory=dict)
    by_day: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self, dry_run: bool) -> str:
        verb = "would send" if dry_run else "sent"
        types = ", ".join(f"{k} {v}" for k, v in sorted(self.by_call_type.items()))
        text = (
            f"{self.files} files ({self.files_skipped} already done), {self.events} events: "
            f"{verb} {self.sent}"
            + (f" ({types})" if types else "")
            + f", {self.suppressed} suppressed, {self.invalid} invalid in {self.seconds:.1f}s"
        )
        if self.invalid_at:
            text += "\ninvalid lines (first ones): " + ", ".join(self.invalid_at)
        return text


class Backfill:
    """Sends the selected files of a store, checkpointing as Kafka acknowledges."""

    def __init__(
        self,
        settings: BackfillSettings,
        store: ArchiveStore,
        sources: dict[str, str],
        checkpoint: Checkpoint | None,
        *,
        suppressions: SuppressionCheck | None = None,
        progress: Callable[[int], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.store = store
        self.sources = sources
        self.checkpoint = checkpoint
        self.suppressions = suppressions
        self._progress = progress or (lambda _n: None)
        self._clock = clock
        self._topics: Topics = settings.kafka.topics
        self._encode = compile_writer(AvroCodec().latest(RAW_EVENT))
        self._limiter = RateLimiter(settings.rate_limit_per_s)
        self._limits = settings.limits.event_limits()
        self._run_id = f"backfill-{uuid.uuid4().hex[:12]}"
        self._producer: Producer | None = None
        self._failures: list[str] = []
        self.on_file_done: Callable[[ArchiveFile], None] = lambda _f: None

    def run(self, files: list[ArchiveFile], *, dry_run: bool = False) -> BackfillReport:
        report = BackfillReport(files=len(files))
        started = time.monotonic()
        if not dry_run:
            self._producer = Producer(producer_config(self.settings.kafka, "backfill"))
        try:
            for archive_file in files:
                start = 0
                if self.checkpoint is not None and not dry_run:
                    found = self.checkpoint.start_line(archive_file.rel_path, archive_file.size)
                    if found is None:
                        report.files_skipped += 1
                        continue
                    start = found
                self._file(archive_file, start, report, dry_run)
                self.on_file_done(archive_file)
        finally:
            if self._producer is not None:
                self._producer.flush(self.settings.produce_timeout_s)
        report.seconds = time.monotonic() - started
        return report

    def _file(self, af: ArchiveFile, start: int, report: BackfillReport, dry_run: bool) -> None:
        source = self.sources[af.source_folder]
        headers: list[tuple[str, str | bytes | None]] = [
            (HEADER_SOURCE, source.encode()),
            (HEADER_REQUEST_ID, self._run_id.encode()),
        ]
        now = self._clock()
        since_checkpoint = 0
        line_no = 0
        with self.store.open(af.rel_path) as stream:
            for line_no, line in enumerate(read_lines(stream), start=1):
                if line_no <= start:
                    continue
                converted = convert_line(line, source, now, self._limits)
                if converted is None:
                    continue
                report.events += 1
                self._progress(1)
                if isinstance(converted, ItemProblem):
                    report.invalid += 1
                    if len(report.invalid_at) < 20:
                        report.invalid_at.append(f"{af.rel_path}:{line_no} ({converted.code})")
                    continue
                if self.suppressions is not None and is_suppressed(
                    self.suppressions, converted.fields
                ):
                    report.suppressed += 1
                    continue
                report.sent += 1
                ct = converted.call_type
                report.by_call_type[ct] = report.by_call_type.get(ct, 0) + 1
                day = af.day.isoformat()
                report.by_day[day] = report.by_day.get(day, 0) + 1
                if dry_run:
                    continue
                self._limiter.acquire()
                self._produce(ct, converted.key, self._encode(converted.record), headers)
                since_checkpoint += 1
                if since_checkpoint >= self.settings.checkpoint_every:
                    self._acknowledge()
                    self._note(af, line_no, done=False)
                    since_checkpoint = 0
        if not dry_run:
            self._acknowledge()
            self._note(af, line_no, done=True)

    def _note(self, af: ArchiveFile, lines: int, *, done: bool) -> None:
        if self.checkpoint is not None:
            self.checkpoint.record(af.rel_path, af.size, lines, done)

    def _produce(
        self,
        call_type: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]],
    ) -> None:
        assert self._producer is not None
        topic = self._topics.raw(call_type)
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=self._delivered
                )
                break
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise RetryableError(f"producing to {topic}: {exc}") from exc
        self._producer.poll(0)

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures.append(str(err))

    def _acknowledge(self) -> None:
        """Wait until Kafka acknowledged everything sent so far (or fail without a checkpoint)."""
        assert self._producer is not None
        deadline = time.monotonic() + self.settings.produce_timeout_s
        while self._producer.flush(0.5) > 0:
            if time.monotonic() > deadline:
                raise RetryableError(
                    "Kafka did not acknowledge the backfill in time; rerun to resume from the "
                    "checkpoint"
                )
        if self._failures:
            raise RetryableError(f"Kafka refused backfilled events: {self._failures[0]}")
