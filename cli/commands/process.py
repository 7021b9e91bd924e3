"""segflow process: run one Faust worker of the processors."""

from __future__ import annotations

import argparse
import logging

import faust
from prometheus_client import CollectorRegistry

from cli.options import add_settings_options, settings_from_args
from processors import faust_seam
from processors.app import ProcessorApp
from processors.app_config import TopicLayout, discover_layout
from processors.settings import ProcessorSettings
from runtime.health import HealthServer, HealthState
from runtime.logs import setup_logging
from runtime.rules import Rules, load_rules
from runtime.suppressions import SuppressionList, load_suppression_list

logger = logging.getLogger(__name__)

DESCRIPTION = """Run a Faust worker reading segment.raw.* and writing segment.events.* (deduplicated
by messageId, PII masked, identities stitched, drift annotated), segment.identity,
segment.schema-changes and segment.dlq. Events of users on the suppression list
(segment.suppressions, loaded before the worker starts) are dropped. Scale by running more
workers with the same app id.
With the exactly_once guarantee (default) a partition's output, state changes and consumed
offsets are committed in one Kafka transaction. Metrics and health: /metrics, /healthz,
/readyz on the metrics port."""


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings_options(parser, ProcessorSettings)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(ProcessorSettings, args)
    obs = settings.observability
    setup_logging("process", obs.log_level, obs.log_format)
    rules = load_rules(obs.rules_file)
    layout = discover_layout(settings.kafka)
    health = HealthState()
    suppressions = None
    if settings.honour_suppressions:
        # loaded before the first raw record is read: no forgotten user's event slips through
        suppressions = load_suppression_list(settings.kafka, settings.suppressions_wait_s)
        reader = suppressions
        health.checks["suppressions"] = lambda: reader.error is None  # stopped following
    else:
        logger.warning("honour_suppressions is off: suppressed users' events are processed")
    try:
        return _serve(settings, rules, layout, health, suppressions)
    finally:
        if suppressions is not None:
            suppressions.stop()


def _serve(
    settings: ProcessorSettings,
    rules: Rules,
    layout: TopicLayout,
    health: HealthState,
    suppressions: SuppressionList | None,
) -> int:
    registry = CollectorRegistry()
    processor = ProcessorApp(settings, rules, registry, layout, health, suppressions)
    # every private Faust member the processors rely on, before anything is consumed
    faust_seam.check(processor.app)
    server = HealthServer(registry, health, settings.metrics_host, settings.metrics_port).start()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    worker = faust.Worker(
        processor.app,
        loglevel=settings.observability.log_level,
        override_logging=False,
        quiet=True,
        redirect_stdouts=False,
    )
    logger.info(
        "processor %s starting: %d partitions per raw topic, guarantee %s, %s",
        settings.app_id,
        layout.raw_partitions,
        settings.processing_guarantee,
        "suppression list off" if suppressions is None else f"{len(suppressions)} users suppressed",
    )
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        processor.stop_watchdog()
        server.stop()
    if processor.fatal is not None or processor.app.crash_reason is not None:
        logger.error("processor stopped on an error")
        return 1
    return code
