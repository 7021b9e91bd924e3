"""segflow reverse-etl."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from prometheus_client import CollectorRegistry

from cli.options import add_settings_options, settings_from_args
from reverse_etl import ReverseEtlMetrics, ReverseEtlSettings, ReverseEtlSync
from reverse_etl.client import RetryPolicy, SegmentApiClient
from runtime.health import HealthServer, HealthState
from runtime.logs import setup_logging
from runtime.suppressions import SuppressionList, load_suppression_list
from schemas.errors import ConfigError
from sinks.snowflake.session import WarehouseSession

DESCRIPTION = """Run a SQL query against the warehouse and send each row as an identify (traits)
or track (properties) call to a Segment-compatible API, only the rows that are new or changed
since the last sync (state in the warehouse table _segflow_reverse_etl_state).

  segflow reverse-etl --reverse-etl-sync-name plans \\
      --reverse-etl-query "select user_id, plan, seats from web.accounts_enriched" \\
      --reverse-etl-write-key KEY [--reverse-etl-api-host http://127.0.0.1:8088]

Once by default (a CronJob); --reverse-etl-interval-s N syncs every N seconds. Calls carry
context.segflow.reverse_etl = <sync name> so the pipeline can drop its own echo. Users on the
suppression list (segflow forget) are never sent: the list is read from Kafka (--kafka-...)
before the first sync and followed (--no-reverse-etl-honour-suppressions: off)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="count what would be sent; send and record nothing",
    )
    parser.add_argument(
        "--reset-state",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="forget what this sync sent before, so every row is sent again",
    )
    add_settings_options(parser, ReverseEtlSettings)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(ReverseEtlSettings, args)
    obs = settings.observability
    setup_logging("reverse-etl", obs.log_level, obs.log_format)
    if settings.write_key is None and not args.dry_run:
        raise ConfigError("write_key (SEGFLOW_REVERSE_ETL_WRITE_KEY) is required to send calls")
    registry = CollectorRegistry()
    metrics = ReverseEtlMetrics(registry)
    client = None
    if settings.write_key is not None:
        client = SegmentApiClient(
            settings.api_host,
            settings.write_key.get_secret_value(),
            gzip_bodies=settings.gzip,
            timeout_s=settings.request_timeout_s,
            policy=RetryPolicy(
                settings.retry_initial_s, settings.retry_max_s, settings.retry_max_attempts
            ),
            on_response=lambda status: metrics.requests.labels(settings.sync_name, status).inc(),
        )
    reader = None
    if settings.honour_suppressions:
        reader = load_suppression_list(settings.kafka, settings.suppressions_wait_s)
    try:
        with WarehouseSession(settings.warehouse, "reverse-etl") as session:
            sync = ReverseEtlSync(settings, session, client, metrics, suppressions=reader)
            if args.reset_state:
                removed = sync.state.forget_sync(settings.sync_name)
                print(f"sync {settings.sync_name}: forgot the state of {removed} rows")
            if settings.interval_s <= 0 or args.dry_run:
                report = sync.run_once(dry_run=args.dry_run)
                print(f"sync {settings.sync_name}: {report.summary()}")
                return 0
            return _loop(sync, settings, registry, reader)
    finally:
        if reader is not None:
            reader.stop()


def _loop(
    sync: ReverseEtlSync,
    settings: ReverseEtlSettings,
    registry: CollectorRegistry,
    reader: SuppressionList | None,
) -> int:
    stop = threading.Event()
    health = HealthState()
    if reader is not None:
        health.checks["suppressions"] = lambda: reader.ready
    server = None
    if settings.metrics_port:
        server = HealthServer(registry, health, settings.metrics_host, settings.metrics_port)
        server.start()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    health.set_ready(True, "syncing")
    try:
        sync.run_forever(stop, on_error=lambda exc: health.set_ready(False, str(exc)[:200]))
    finally:
        if server is not None:
            server.stop()
    return 0
