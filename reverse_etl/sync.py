"""One reverse ETL sync: query -> calls -> diff against the last sync -> batches -> API -> state.

Rows of users on the suppression list (``runtime.suppressions``: userId or anonymousId) are
never sent: they are skipped and counted (outcome ``suppressed``; no identifier is logged), and
their state is left as it was, so a lifted suppression sends them again.

Rows stream from the warehouse ``fetch_rows`` at a time; each request is recorded in the state
table as soon as the API accepted it. A row whose key appears twice in one result is sent once
(the first) and counted as a duplicate. The state of every key sent is held in memory during a
sync (about 100 bytes a key).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reverse_etl.batches import iter_batches
from reverse_etl.calls import CallSpec, RowCall, RowSkipped, build_call, row_to_dict
from reverse_etl.client import SegmentApiClient
from reverse_etl.settings import ReverseEtlSettings
from reverse_etl.state import SyncState
from schemas.errors import ConfigError, FatalError, RetryableError
from schemas.timestamps import to_iso
from sinks.snowflake.session import WarehouseSession

logger = logging.getLogger(__name__)

_JSON_TYPE_CODES = frozenset({5, 9, 10})  # VARIANT, OBJECT, ARRAY (snowflake.connector)


class Suppressions(Protocol):
    """What a sync needs of runtime.suppressions.SuppressionList."""

    def is_suppressed(self, user_id: object = None, anonymous_id: object = None) -> bool: ...


class ReverseEtlMetrics:
    """segflow_reverse_etl_* on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "segflow_reverse_etl_rows_total",
            "Query rows by outcome (sent, unchanged, skipped_<reason>, duplicate, oversized, "
            "suppressed)",
            ["sync", "outcome"],
            registry=registry,
        )
        self.requests = Counter(
            "segflow_reverse_etl_requests_total",
            "Batch requests by HTTP status (or network_error)",
            ["sync", "status"],
            registry=registry,
        )
        self.syncs = Counter(
            "segflow_reverse_etl_syncs_total",
            "Syncs by outcome (ok, retryable, fatal)",
            ["sync", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "segflow_reverse_etl_sync_seconds",
            "Duration of a sync",
            ["sync"],
            buckets=(1, 5, 15, 60, 300, 900, 3600),
            registry=registry,
        )
        self.last_success = Gauge(
            "segflow_reverse_etl_last_success_timestamp_seconds",
            "Unix time of the last successful sync",
            ["sync"],
            registry=registry,
        )


@dataclass
class SyncReport:
    rows: int = 0
    sent: int = 0
    unchanged: int = 0
    duplicates: int = 0
    oversized: int = 0
    suppressed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
        return (
            f"{self.rows} rows: {verb} {self.sent} in {self.requests} requests, "
            f"{self.unchanged} unchanged, {self.duplicates} duplicate keys, "
            f"{self.oversized} over the event size limit, {skipped} skipped"
            + (f", {self.suppressed} of suppressed users" if self.suppressed else "")
            + (f" ({reasons})" if reasons else "")
            + f" in {self.seconds:.1f}s"
        )


def call_spec(settings: ReverseEtlSettings) -> CallSpec:
    try:
        integrations = orjson.loads(settings.integrations_json)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"integrations_json is not JSON: {exc}") from exc
    if not isinstance(integrations, dict):
        raise ConfigError("integrations_json must be a JSON object")
    if settings.call == "track" and settings.key_column is None:
        raise ConfigError("a track sync needs key_column: the column identifying each row")
    return CallSpec(
        sync_name=settings.sync_name,
        call=settings.call,
        user_id_column=settings.user_id_column,
        anonymous_id_column=settings.anonymous_id_column,
        key_column=settings.row_key_column,
        event=settings.event,
        event_column=settings.event_column,
        group_id_column=settings.group_id_column,
        timestamp_column=settings.timestamp_column,
        integrations=integrations,
    )


class ReverseEtlSync:
    """Runs the configured sync once or on an interval."""

    def __init__(
        self,
        settings: ReverseEtlSettings,
        session: WarehouseSession,
        client: SegmentApiClient | None,
        metrics: ReverseEtlMetrics,
        *,
        suppressions: Suppressions | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.spec = call_spec(settings)
        self.session = session
        self.client = client
        self.metrics = metrics
        self.suppressions = suppressions
        self.state = SyncState(session, settings.state_schema)
        self._clock = clock

    def run_once(self, *, dry_run: bool = False) -> SyncReport:
        name = self.settings.sync_name
        started = time.monotonic()
        report = SyncReport(dry_run=dry_run)
        try:
            self._sync(report, dry_run)
        except RetryableError:
            self.metrics.syncs.labels(name, "retryable").inc()
            raise
        except FatalError:
            self.metrics.syncs.labels(name, "fatal").inc()
            raise
        report.seconds = time.monotonic() - started
        self.metrics.syncs.labels(name, "ok").inc()
        self.metrics.duration.labels(name).observe(report.seconds)
        if not dry_run:
            self.metrics.last_success.labels(name).set(time.time())
        for outcome, count in (
            ("sent", report.sent),
            ("unchanged", report.unchanged),
            ("duplicate", report.duplicates),
            ("oversized", report.oversized),
            ("suppressed", report.suppressed),
            *((f"skipped_{k}", v) for k, v in report.skipped.items()),
        ):
            if count:
                self.metrics.rows.labels(name, outcome).inc(count)
        logger.info("reverse ETL sync %s: %s", name, report.summary())
        return report

    def run_forever(self, stop: threading.Event, on_error: Callable[[BaseException], None]) -> None:
        """Sync every interval_s until `stop` is set; a failed sync is retried next interval."""
        while not stop.is_set():
            began = time.monotonic()
            try:
                self.run_once()
            except RetryableError as exc:
                logger.warning(
                    "reverse ETL sync %s failed, retried next interval: %s",
                    self.settings.sync_name,
                    exc,
                )
                on_error(exc)
            stop.wait(max(0.0, self.settings.interval_s - (time.monotonic() - began)))

    # -- the sync ----------------------------------------------------------------------------
    def _sync(self, report: SyncReport, dry_run: bool) -> None:
        sent_at = self._clock()
        synced = self.state.load(self.settings.sync_name)
        oversized: list[RowCall] = []
        batches = iter_batches(
            self._changed(synced, sent_at, report),
            max_events=self.settings.max_batch_events,
            max_bytes=self.settings.max_batch_bytes,
            max_event_bytes=self.settings.max_event_bytes,
            oversized=oversized,
        )
        for batch in batches:
            if not dry_run:
                assert self.client is not None
                self.client.send(batch.body(to_iso(self._clock()) or ""))
                self.state.save(self.settings.sync_name, batch.calls, self._clock())
            report.requests += 1
            report.sent += len(batch.calls)
        report.oversized = len(oversized)

    def _rows(self) -> Iterator[dict[str, Any]]:
        cur = self.session.run(self.settings.sql(), kind="query")
        description = cur.description or []
        columns = [d.name for d in description]
        json_columns = frozenset(d.name for d in description if d.type_code in _JSON_TYPE_CODES)
        names = {c.lower() if c.isupper() else c for c in columns}
        spec = self.spec
        if spec.key_column not in names:
            raise FatalError(
                f"the query has no column {spec.key_column!r} (row key); it returns {sorted(names)}"
            )
        if spec.user_id_column not in names and spec.anonymous_id_column not in names:
            raise FatalError(
                f"the query has neither {spec.user_id_column!r} nor {spec.anonymous_id_column!r}"
            )
        while True:
            chunk = cur.fetchmany(self.settings.fetch_rows)
            if not chunk:
                return
            for values in chunk:
                yield row_to_dict(columns, values, json_columns)

    def _changed(
        self, synced: dict[str, str], sent_at: datetime, report: SyncReport
    ) -> Iterator[RowCall]:
        seen: set[str] = set()
        for row in self._rows():
            report.rows += 1
            try:
                rc = build_call(self.spec, row, sent_at)
            except RowSkipped as skip:
                report.skipped[skip.reason] = report.skipped.get(skip.reason, 0) + 1
                continue
            if self.suppressions is not None and self.suppressions.is_suppressed(
                rc.call.get("userId"), rc.call.get("anonymousId")
            ):
                report.suppressed += 1
                continue
            if rc.key in seen:
                report.duplicates += 1
                continue
            seen.add(rc.key)
            if synced.get(rc.key) == rc.row_hash:
                report.unchanged += 1
                continue
            yield rc
