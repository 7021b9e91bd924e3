"""The processors' Faust app, put together: one agent over every raw topic, state in changelogged
tables, one transaction per partition.

:class:`ProcessorApp` wires four parts, each in its own module:

- :mod:`processors.app_config`: the Faust app configured from settings (topics, tables,
  producer and commit options) and the topic layout found on the cluster;
- :mod:`processors.recovery`: the live state's lineage across rebalances, table recovery into
  it and the check that recovery loaded what it should;
- :mod:`processors.batch_agent`: the agent loop over fetched batches, the pure
  :class:`~processors.pipeline.Pipeline`, and the records each outcome becomes;
- :mod:`processors.handoff`: those records through each partition's transactional producer
  (exactly once), or discarded when a rebalance made the batch stale.

Every private Faust member they rely on is reached through :mod:`processors.faust_seam`, checked
when the worker starts. A failure that leaves the state out of step with Kafka crashes the app
(:mod:`processors.crash`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping

from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from processors import faust_seam
from processors.alerts import AlertBatcher, WebhookAlerter
from processors.app_config import AGENT_NAME, TopicLayout, build_app, raw_source
from processors.batch_agent import BatchAgent
from processors.crash import WorkerCrash
from processors.dedupe import Deduper
from processors.drift import DriftDetector, KnownFields
from processors.faust_seam import TP, CommitWatch
from processors.handoff import Handoff
from processors.masking import Masker
from processors.metrics import ProcessorMetrics
from processors.pipeline import Pipeline
from processors.progress import (
    ProgressWatch,
    ProgressWatchdog,
    Stall,
    describe_tasks,
    period_for,
)
from processors.recovery import LiveState, StateRecovery
from processors.settings import ProcessorSettings
from processors.stitching import IdentityGraph
from processors.suppressions import SuppressionCheck
from runtime.group_offsets import read_committed_offsets, read_end_offsets
from runtime.health import HealthState
from runtime.kafka_config import admin_config
from runtime.rules import Rules
from schemas.topics import PartitionKey, Topics

logger = logging.getLogger(__name__)

#: seconds the event loop has to crash the app after a stall before the process exits anyway
STALL_EXIT_GRACE_S = 30.0


class ProcessingStalled(RuntimeError):
    """Raw partitions of this worker had records waiting and no commit for too long."""


class ProcessorApp:
    """Builds the Faust app, its tables and its agent from settings and rules."""

    def __init__(
        self,
        settings: ProcessorSettings,
        rules: Rules,
        registry: CollectorRegistry,
        layout: TopicLayout,
        health: HealthState | None = None,
        suppressions: SuppressionCheck | None = None,
    ) -> None:
        """`suppressions`: the loaded suppression list, whose users' events are dropped (None:
        every event is processed)."""
        self.settings = settings
        self.topics: Topics = settings.kafka.topics
        self.layout = layout
        self.metrics = ProcessorMetrics(registry)
        self.health = health or HealthState()
        exactly_once = settings.processing_guarantee == "exactly_once"
        key = settings.pii_hmac_key.get_secret_value().encode() if settings.pii_hmac_key else None
        self.deduper = Deduper(
            settings.dedupe_lookback_s,
            settings.dedupe_max_entries_per_partition,
            settings.dedupe_max_bytes_per_partition,
        )
        self.graph = IdentityGraph(
            rules.identity,
            settings.identity_max_entries_per_partition,
            settings.identity_max_bytes_per_partition,
        )
        self.known = KnownFields(settings.drift_max_fields)
        live = LiveState(self.deduper, self.graph, self.known)
        pipeline = Pipeline(
            self.deduper,
            Masker(rules.pii, key, settings.pii_key_label),
            self.graph,
            DriftDetector(rules.tracking_plan, self.known),
            rules.tracking_plan.mode,
            suppressions,
        )
        self.alerter = self._alerter(settings, rules)
        self.app = build_app(settings, layout)
        self.crash = WorkerCrash(self.app)
        self.recovery = StateRecovery(
            self.app, settings, layout.raw_partitions, live, self.metrics, self.health, self.crash
        )
        self.tables = self.recovery.tables
        self.changelog_topic = self.recovery.changelog_topic
        self.handoff = Handoff(
            self.app, exactly_once, self.recovery.epochs, live, self.metrics, self.crash
        )
        self.agent = BatchAgent(
            self.app,
            settings,
            layout,
            pipeline,
            live,
            self.handoff,
            self.changelog_topic,
            self.metrics,
            self.crash,
            self.alerter,
        )
        self.app.agent(raw_source(self.app, self.topics.all_raw()), name=AGENT_NAME)(self.agent.run)
        if self.alerter is not None:
            alerter = self.alerter

            @self.app.task
            async def start_alerter() -> None:
                alerter.start()

        self.app.batch_sink = self.agent.batches.put
        self.app.batch_topics = frozenset(self.topics.all_raw())
        self.app.rebalance_listener = self._on_rebalance
        self.progress = ProgressWatch(settings.progress_stall_s)
        self.watchdog: ProgressWatchdog | None = None
        if settings.progress_stall_s > 0:

            @self.app.task
            async def start_watchdog() -> None:
                self.start_watchdog(asyncio.get_running_loop())

        self.app.commit_watch = CommitWatch(settings.commit_stall_s)
        stalls = self.metrics.commit_stalls
        self.app.commit_stall_listener = lambda tp, committed, acked: stalls.labels(tp.topic).inc()
        skipped = self.metrics.skipped_fetches
        self.app.skipped_fetch_listener = lambda tp, first, past: skipped.labels(tp.topic).inc()

    async def _on_rebalance(self, assigned: set[TP], revoked: set[TP], generation: int) -> set[TP]:
        raw = self.app.batch_topics
        self.progress.assign((tp.topic, tp.partition) for tp in assigned if tp.topic in raw)
        return await self.recovery.on_rebalance(assigned, revoked, generation)

    def start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch this worker's progress from a thread (see :mod:`processors.progress`)."""
        admin = AdminClient(admin_config(self.settings.kafka, "processors-watchdog"))
        group, timeout_s = self.settings.app_id, 10.0

        def read(
            keys: frozenset[PartitionKey],
        ) -> tuple[Mapping[PartitionKey, int | None], Mapping[PartitionKey, int]]:
            committed = read_committed_offsets(admin, group, keys, timeout_s)
            # nothing committed yet: the worker reads from the log start (auto.offset.reset
            # earliest), where its first commit is awaited
            fresh = [k for k in keys if committed.get(k) is None]
            if fresh:
                committed.update(read_end_offsets(admin, fresh, timeout_s, earliest=True))
            return committed, read_end_offsets(admin, keys, timeout_s)

        app = self.app

        def settling() -> bool:
            return bool(app.rebalancing or app.in_recovery)

        logger.info(
            "progress watchdog: a worker with records waiting and no commit for %g s stops",
            self.settings.progress_stall_s,
        )
        self.watchdog = ProgressWatchdog(
            self.progress,
            read,
            settling,
            lambda stalls: self.on_stall(stalls, loop),
            period_for(self.settings.progress_stall_s),
        ).start()

    def stop_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()

    def on_stall(self, stalls: list[Stall], loop: asyncio.AbstractEventLoop) -> None:
        """Stop the worker (from the watchdog's thread): /healthz 503, the app crashed, and the
        process ended after a grace period should the event loop not get to it."""
        waited = min(s.waited_s for s in stalls)
        described = "; ".join(s.describe() for s in stalls[:10])
        more = f" and {len(stalls) - 10} more" if len(stalls) > 10 else ""
        logger.error(
            "no progress for %.0f s on %d partitions with records waiting: %s%s; the worker "
            "stops, to be restarted",
            waited,
            len(stalls),
            described,
            more,
        )
        self.health.set_live(False, f"no progress for {waited:.0f} s on {len(stalls)} partitions")
        error = ProcessingStalled(f"no progress on {len(stalls)} partitions")
        tps = [TP(s.topic, s.partition) for s in stalls]
        asyncio.run_coroutine_threadsafe(self._stop_stalled(tps, error), loop)
        timer = threading.Timer(STALL_EXIT_GRACE_S, self._exit_stalled)
        timer.daemon = True
        timer.start()

    async def _stop_stalled(self, tps: list[TP], error: ProcessingStalled) -> None:
        """Log where the worker's tasks wait and what the consumer holds of the stalled
        partitions, for whoever looks into the stall, then crash the app."""
        try:
            logger.error(
                "the worker's tasks at the stall:\n%s", describe_tasks(asyncio.all_tasks())
            )
            view = await faust_seam.consumer_view(self.app, tps)
            logger.error("the consumer at the stall: %s", view)
        finally:
            self.crash.fail(error)

    def _exit_stalled(self) -> None:
        """The event loop did not get to the crash (blocked): log where its thread is, exit."""
        frame = sys._current_frames().get(threading.main_thread().ident or 0)
        where = "".join(traceback.format_stack(frame)) if frame is not None else "(gone)\n"
        logger.error(
            "the worker did not stop within %.0f s of the stall: exiting; the main thread:\n%s",
            STALL_EXIT_GRACE_S,
            where.rstrip(),
        )
        logging.shutdown()
        os._exit(1)

    @property
    def fatal(self) -> BaseException | None:
        """The error that stopped the worker (None while it runs or after a clean stop)."""
        return self.crash.error

    @property
    def crashing(self) -> asyncio.Future[None] | None:
        """The app's crash set off by `fatal`, until it completes."""
        return self.crash.crashing

    def _alerter(self, settings: ProcessorSettings, rules: Rules) -> WebhookAlerter | None:
        """The schema-change webhook, when a URL is set (settings first, then the plan)."""
        plan = rules.tracking_plan
        url = (
            settings.alert_webhook_url.get_secret_value()
            if settings.alert_webhook_url is not None
            else plan.alert_webhook_url
        )
        if not url:
            return None
        interval = settings.alert_min_interval_s
        return WebhookAlerter(
            url,
            AlertBatcher(interval if interval is not None else plan.alert_min_interval_s),
            self.metrics,
            settings.alert_timeout_s,
            time.monotonic,
        )
