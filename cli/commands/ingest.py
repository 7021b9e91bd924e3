"""segflow ingest: serve the Segment-compatible HTTP edge."""

from __future__ import annotations

import argparse

from cli.options import add_settings_options, settings_from_args
from ingest.server import serve
from ingest.settings import IngestSettings
from runtime.logs import setup_logging
from runtime.rules import load_rules

DESCRIPTION = """Serve Segment's HTTP Tracking API (/v1/track, /v1/batch, ...), the analytics.js
short paths (/v1/t, /v1/b, ...) with CORS, and a webhook endpoint for Segment's Webhooks
destination (/v1/webhook). Events are written, Avro-encoded, to segment.raw.<call type>; a
request is answered 200 only after Kafka acknowledged all of its events (503 otherwise).
Write keys map to sources in the rules file. Metrics and health: /metrics, /healthz, /readyz
on the same port."""


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings_options(parser, IngestSettings)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(IngestSettings, args)
    obs = settings.observability
    setup_logging("ingest", obs.log_level, obs.log_format)
    rules = load_rules(obs.rules_file)
    return serve(settings, rules)
