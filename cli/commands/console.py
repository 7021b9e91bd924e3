"""segflow console: the read-only web console."""

from __future__ import annotations

import argparse
import socket
import threading
from datetime import timedelta
from types import FrameType
from typing import Any

import uvicorn

from cli.options import add_settings_options, settings_from_args
from observe.console.app import ConsoleState, create_app
from observe.console.pipeline import Scraper, status_view
from observe.console.schema import read_schema_changes
from observe.console.settings import ConsoleSettings, check_exposure, is_loopback
from observe.console.sources import sources_view
from observe.feed import LiveFeed
from observe.settings import StatusSettings
from observe.status import collect, default_components
from runtime.logs import setup_logging
from runtime.rules import load_rules
from runtime.settings import ObservabilitySettings

DESCRIPTION = """Serve the read-only web console: live events (the clean topics, masked, as the
warehouse receives them; filter by source, type and event; click for the whole record), the
pipeline (rates per stage from each component's /metrics, lag, freshness p50/p95, errors,
restarts), the DLQ (reasons and origins, never payloads, and the `segflow replay copy` command
that re-drives them), schema changes and misfits, and the sources with their setup snippets.

It binds to 127.0.0.1 by default. Bound to any other address it needs SEGFLOW_CONSOLE_TOKEN
(better: SEGFLOW_CONSOLE_TOKEN_FILE): API calls send `Authorization: Bearer <token>`, a browser
signs in once at /login (or opens any page with ?token=...) and gets an HttpOnly, SameSite=Strict
session cookie. It reads Kafka without a consumer group and commits nothing; where the
components, the broker and the warehouse are comes from the SEGFLOW_STATUS_* settings shared
with `segflow status`."""

SCHEMA_WINDOW = timedelta(days=7)


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings_options(parser, ConsoleSettings)
    add_settings_options(parser, StatusSettings)
    add_settings_options(parser, ObservabilitySettings)


def build_state(
    settings: ConsoleSettings, status: StatusSettings, obs: ObservabilitySettings
) -> ConsoleState:
    """Everything the console reads from, wired from the settings (nothing started yet)."""
    components = default_components(status)
    feed = LiveFeed(
        status.kafka,
        capacity=settings.events,
        dlq_capacity=settings.dlq_entries,
        backlog=settings.backlog,
        dlq_backlog=settings.dlq_entries,
    )
    scraper = Scraper({name: url.rstrip("/") + "/metrics" for name, url in components.items()})

    def read_status() -> dict[str, Any]:
        return status_view(collect(status, components=components).to_dict())

    def read_schema() -> list[dict[str, Any]]:
        return read_schema_changes(status.warehouse, SCHEMA_WINDOW)

    edge_url = settings.edge_public_url or status.edge_url
    return ConsoleState(
        settings=settings,
        feed=feed,
        scraper=scraper,
        sources=sources_view(load_rules(obs.rules_file), edge_url),
        status_reader=read_status,
        schema_reader=read_schema if status.warehouse_check else None,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(ConsoleSettings, args)
    status = settings_from_args(StatusSettings, args)
    obs = settings_from_args(ObservabilitySettings, args)
    setup_logging("console", obs.log_level, obs.log_format)
    check_exposure(settings)
    state = build_state(settings, status, obs)
    app = create_app(state)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    port = sock.getsockname()[1]
    shown = settings.host if ":" not in settings.host else f"[{settings.host}]"
    where = "" if is_loopback(settings.host) else " (token required)"
    print(f"segflow console: http://{shown}:{port}/{where}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    ConsoleServer(config, state.closing).run(sockets=[sock])
    return 0


class ConsoleServer(uvicorn.Server):
    """uvicorn's server that, asked to stop, first tells the live streams to end."""

    def __init__(self, config: uvicorn.Config, closing: threading.Event) -> None:
        super().__init__(config)
        self._closing = closing

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._closing.set()
        super().handle_exit(sig, frame)
