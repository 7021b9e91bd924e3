"""segflow tail: a live sample of the events passing through the pipeline."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from cli.options import add_settings_options, settings_from_args
from cli.output import OUTPUT_FORMATS
from observe.feed import EventSummary, FeedFilter, LiveFeed
from observe.tail import RAW_WARNING, event_json, event_line, follow
from runtime.settings import KafkaSettings
from schemas.topics import CALL_TYPES

DESCRIPTION = """Print the events passing through the pipeline as they pass, one line each
(time, type, event or page name, source, ids, a short property summary) or one JSON object each
(--output json). It reads the clean topics by default: what the sink loads, PII masked. --raw
reads the raw topics instead, which hold events as sent, personal data included (a warning on
stderr says so). It joins no consumer group and commits nothing, so the pipeline never sees it.
Ctrl-C stops it."""

# Records per partition the feed holds between two prints; more in one burst are a sample.
RING_CAPACITY = 5000
EVERYTHING = 10**15  # "records before the end" that reaches back to each partition's start


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="", help="only events of this source (exact)")
    parser.add_argument("--type", default=None, choices=CALL_TYPES, help="only this call type")
    parser.add_argument(
        "--event", default="", help="only events whose event or page/screen name contains this"
    )
    parser.add_argument(
        "--raw",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="read the raw topics instead of the clean ones: events as sent, with unmasked "
        "personal data (a warning on stderr says so)",
    )
    parser.add_argument(
        "--clean",
        dest="raw",
        action="store_const",
        const=False,
        help="read the clean topics, PII masked: the default (same as --no-raw)",
    )
    parser.add_argument("--limit", type=int, default=None, help="stop after this many events")
    parser.add_argument(
        "--output",
        choices=OUTPUT_FORMATS,
        default="table",
        help="table: one aligned line per event (default); json: one JSON object per line",
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--last",
        type=int,
        default=0,
        metavar="N",
        help="start N records before the end of each partition (default: only new events)",
    )
    start.add_argument(
        "--from-beginning",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="start at the beginning of each partition",
    )
    add_settings_options(parser, KafkaSettings)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("observe.feed").setLevel(logging.ERROR)  # retries: not for this screen
    kafka = settings_from_args(KafkaSettings, args)
    if args.raw:
        print(RAW_WARNING, file=sys.stderr, flush=True)
    if args.limit is not None and args.limit < 1:
        return 0
    feed = LiveFeed(
        kafka,
        capacity=RING_CAPACITY,
        backlog=EVERYTHING if args.from_beginning else max(0, args.last),
        raw=args.raw,
        include_dlq=False,
    )
    flt = FeedFilter(source=args.source, call_type=args.type or "", event=args.event)

    def emit(summary: EventSummary, record: dict[str, Any] | None) -> None:
        line = event_json(summary, record) if args.output == "json" else event_line(summary, record)
        print(line, flush=True)

    try:
        follow(feed, flt, emit, limit=args.limit)
    except KeyboardInterrupt:
        pass  # Ctrl-C: the normal end
    except BrokenPipeError:
        # the reader of a pipe (head) has had enough: a normal end too; stdout goes nowhere
        # from here, so the interpreter's last flush does not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
