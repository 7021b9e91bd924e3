"""segflow status: the pipeline on one screen, or as JSON for scripts and probes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from cli.options import add_settings_options, settings_from_args
from cli.output import add_output_option
from ingest.settings import IngestSettings
from observe.report import render
from observe.settings import StatusSettings
from observe.status import EXIT_UNKNOWN, KAFKA_LOGGER, collect, default_components
from processors.settings import ProcessorSettings
from runtime.settings import build_settings
from schemas.errors import ConfigError
from sinks.snowflake.settings import SinkSettings

DESCRIPTION = """Check the running pipeline at once: each component's /healthz and /readyz, the
consumer-group lag of the processors and the sink per topic (as kafka-consumer-groups.sh
--describe computes it), the DLQ's depth and newest reasons, each warehouse table's last load,
and the number of suppressed users. Read-only: it joins no group and commits nothing.

Unhealthy: a component down, not live or not ready; a group lagging over --status-max-lag on a
topic, or unknown to Kafka; a DLQ record newer than --status-dlq-window-s; a table loaded longer
ago than --status-max-freshness-s (when set).

Exit status: 0 healthy, 1 unhealthy, 2 unknown (a part could not be checked in time and nothing
checked is unhealthy). The consumer groups, ports and control schema follow the components' own
settings (SEGFLOW_PROCESS_APP_ID, SEGFLOW_SINK_GROUP_ID, SEGFLOW_INGEST_PORT, ...) unless set
here."""

# The libraries' own lines (connection retries, broker down) would repeat what the screen says.
QUIET_LOGGERS = (KAFKA_LOGGER, "snowflake.connector", "urllib3", "runtime.suppressions")


def configure(parser: argparse.ArgumentParser) -> None:
    add_output_option(parser)
    parser.add_argument(
        "--component",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="check this component's /healthz and /readyz at URL instead of the default "
        "edge, processors and sink (repeat for each)",
    )
    parser.add_argument(
        "--watch",
        type=float,
        default=None,
        metavar="SECONDS",
        help="check again every SECONDS until Ctrl-C (table output redraws the screen)",
    )
    add_settings_options(parser, StatusSettings)


def components_from(values: list[str]) -> dict[str, str]:
    """NAME=URL pairs as a mapping; a malformed one is a configuration error."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name.strip() or not url.strip().startswith(("http://", "https://")):
            raise ConfigError(f"--component {value!r}: expected NAME=http(s)://HOST:PORT")
        out[name.strip()] = url.strip()
    return out


def status_settings(args: argparse.Namespace) -> StatusSettings:
    """StatusSettings from options and SEGFLOW_STATUS_*, the rest from the components'
    settings: their groups, health ports and the sink's control schema."""
    settings = settings_from_args(StatusSettings, args)
    given = settings.model_fields_set
    derived: dict[str, object] = {}
    try:
        ingest = build_settings(IngestSettings)
        port = ingest.admin_port if ingest.admin_port is not None else ingest.port
        if port:
            derived["edge_url"] = f"http://127.0.0.1:{port}"
    except ConfigError:
        pass  # the edge's settings are not this machine's concern: keep the default
    try:
        process = build_settings(ProcessorSettings)
        if process.metrics_port:  # 0: any free port, not known from here
            derived["processors_url"] = f"http://127.0.0.1:{process.metrics_port}"
        derived["processors_group"] = process.app_id
    except ConfigError:
        pass
    try:
        sink = build_settings(SinkSettings)
        if sink.metrics_port:
            derived["sink_url"] = f"http://127.0.0.1:{sink.metrics_port}"
        derived["sink_group"] = sink.group_id
        derived["control_schema"] = sink.control_schema
    except ConfigError:
        pass
    update = {k: v for k, v in derived.items() if k not in given}
    return settings.model_copy(update=update) if update else settings


def run(args: argparse.Namespace) -> int:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    settings = status_settings(args)
    components = components_from(args.component) or default_components(settings)
    code = EXIT_UNKNOWN
    try:
        while True:
            status = collect(settings, components=components)
            code = status.exit_code
            if args.output == "json":
                print(json.dumps(status.to_dict(), sort_keys=False), flush=True)
            else:
                screen = render(status)
                if args.watch and sys.stdout.isatty():
                    screen = "\x1b[H\x1b[2J" + screen  # home and clear: redraw in place
                print(screen, end="", flush=True)
            if not args.watch:
                return code
            time.sleep(max(0.5, args.watch))
    except KeyboardInterrupt:
        return code
