"""segflow sink: load clean events into Snowflake, exactly once."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from prometheus_client import CollectorRegistry

from cli.options import add_settings_options, settings_from_args
from runtime.health import HealthServer, HealthState
from runtime.logs import setup_logging
from runtime.rules import load_rules
from runtime.suppressions import SuppressionList, load_suppression_list
from sinks.snowflake.consumer import SinkConsumer
from sinks.snowflake.intake import Suppressions
from sinks.snowflake.loader import LoaderOptions, SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.settings import SinkSettings

logger = logging.getLogger(__name__)

DESCRIPTION = """Consume segment.events.* and segment.identity (read_committed) and load them
into Snowflake in Segment's warehouse layout, one schema per source. Records are buffered per
partition and flushed as one warehouse transaction that also moves the partitions' offsets in
_segflow_offsets (compare-and-set), so every event lands exactly once; run more instances with
the same group id to scale. Metrics and health on --sink-metrics-port."""


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings_options(parser, SinkSettings)


def suppression_reader(settings: SinkSettings, health: HealthState) -> SuppressionList | None:
    """The loaded suppression list (None when not honoured); /readyz fails while its reader is
    not following (a dead reader would let a newly forgotten user's rows through)."""
    if not settings.honour_suppressions:
        return None
    reader = load_suppression_list(settings.kafka, 60.0)
    health.checks["suppressions"] = lambda: reader.ready
    return reader


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(SinkSettings, args)
    obs = settings.observability
    setup_logging("sink", obs.log_level, obs.log_format)
    rules = load_rules(obs.rules_file)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %s: flushing and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    registry = CollectorRegistry()
    metrics = SinkMetrics(registry)
    health = HealthState()
    server = HealthServer(registry, health, settings.metrics_host, settings.metrics_port).start()

    reader = suppression_reader(settings, health)
    suppressions: Suppressions | None = reader

    loader = SnowflakeLoader(
        settings.warehouse,
        LoaderOptions(
            group_id=settings.group_id,
            control_schema=settings.control_schema,
            lookback_hours=settings.lookback_hours,
            max_columns_per_table=settings.max_columns_per_table,
            max_tables_per_schema=settings.max_tables_per_schema,
            stage_dir=settings.stage_dir,
            identity_max_hops=settings.identity_max_hops,
        ),
        metrics,
    )
    consumer = SinkConsumer(
        settings, rules, loader, metrics, suppressions=suppressions, health=health
    )
    try:
        consumer.run(stop)
    finally:
        if reader is not None:
            reader.stop()
        server.stop()
    return 0
