"""The `segflow` command. Each subcommand lives in `cli/commands/<name>.py` and only wires the
packages together: it exposes HELP, ``configure(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib import metadata

from schemas.errors import ConfigError, FatalError, SegflowError

logger = logging.getLogger(__name__)

# (subcommand, module in cli/commands, one-line help)
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("up", "up", "run the whole pipeline locally on the embedded defaults"),
    ("ingest", "ingest", "serve the Segment-compatible HTTP edge (Tracking API, webhooks)"),
    ("process", "process", "run a Faust worker: dedupe, PII masking, identity, drift"),
    ("sink", "sink", "run the Snowflake sink: micro-batches, exactly once"),
    ("demo", "demo", "send realistic Segment traffic to a running edge"),
    ("query", "query", "run SQL against the configured warehouse and print a table"),
    ("backfill", "backfill", "send archived Segment events (JSONL/gzip) through the raw topics"),
    ("replay", "replay", "reset a consumer group's offsets or copy a time range between topics"),
    ("reverse-etl", "reverse_etl", "send warehouse query rows as identify/track calls"),
    ("models", "models", "build, test or document the analytics models (dbt) of a source"),
    ("forget", "forget", "delete a user's rows everywhere and suppress the user"),
    ("schema", "schema", "review recorded schema changes (drift) per source"),
    ("promote", "promote", "move a key out of _unmapped into a typed column, with history"),
    ("topics", "topics", "create and check segflow's Kafka topics"),
    ("services", "services", "start, stop or inspect the local Kafka broker and emulator"),
    ("status", "status", "check the running pipeline: health, lag, DLQ, last loads"),
    ("tail", "tail", "print a live sample of the events passing (clean topics, masked)"),
    ("console", "console", "serve the read-only web console: live events, pipeline, DLQ"),
]


def version() -> str:
    """The installed package's version (a source tree that was never installed: "unknown")."""
    try:
        return metadata.version("segflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segflow",
        description="segflow: Segment events into Snowflake through Kafka, exactly once.",
        epilog="Every option also reads from the SEGFLOW_* environment variable shown beside it.",
    )
    parser.add_argument(
        "--version", action="version", version=f"segflow {version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, help_text in SUBCOMMANDS:
        mod = importlib.import_module(f"cli.commands.{module}")
        p = sub.add_parser(
            name,
            help=help_text,
            description=getattr(mod, "DESCRIPTION", help_text),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.configure(p)  # type: ignore[attr-defined]
        p.set_defaults(_run=mod.run)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args._run(args) or 0)
    except ConfigError as exc:
        print(f"segflow {args.command}: configuration error: {exc}", file=sys.stderr)
        code = 78  # EX_CONFIG
    except FatalError as exc:
        print(f"segflow {args.command}: {exc}", file=sys.stderr)
        code = 1
    except SegflowError as exc:
        print(f"segflow {args.command}: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    return code


if __name__ == "__main__":
    sys.exit(main())
