"""segflow ingest: serve the Segment-compatible HTTP edge."""

from __future__ import annotations

import argparse

from cli.options import add_settings_options, settings_from_args
from ingest.server import serve
from ingest.settings import IngestSettings
from runtime.logs import setup_logging
from runtime.rules import DEFAULT_RULES_NAME, load_rules, refuse_development_keys

DESCRIPTION = """Serve Segment's HTTP Tracking API (/v1/track, /v1/batch, ...), the analytics.js
short paths (/v1/t, /v1/b, ...) with CORS, and a webhook endpoint for Segment's Webhooks
destination (/v1/webhook). Events are written, Avro-encoded, to segment.raw.<call type>; a
request is answered 200 only after Kafka acknowledged all of its events (503 otherwise).
Write keys map to sources in the rules file; the embedded development rules (public keys) are
refused unless SEGFLOW_ALLOW_DEV_DEFAULTS=true. Metrics and health: /metrics, /healthz, /readyz
on the same port, or on SEGFLOW_INGEST_ADMIN_PORT when set (the API port then serves no
/metrics). Secrets: SEGFLOW_INGEST_WEBHOOK_SECRET or SEGFLOW_INGEST_WEBHOOK_SECRET_FILE."""


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings_options(parser, IngestSettings)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(IngestSettings, args)
    obs = settings.observability
    setup_logging("ingest", obs.log_level, obs.log_format)
    rules = load_rules(obs.rules_file)
    origin = str(obs.rules_file) if obs.rules_file is not None else DEFAULT_RULES_NAME
    refuse_development_keys(rules, obs.allow_dev_defaults, origin)
    return serve(settings, rules)
