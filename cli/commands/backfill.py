"""segflow backfill PATH."""

from __future__ import annotations

import argparse
from datetime import date

from cli.options import add_settings_options, settings_from_args
from cli.progress import Progress
from ingest.archive import list_files, open_store
from ingest.backfill import Backfill, BackfillSettings, select_files, source_names
from ingest.checkpoint import Checkpoint
from runtime.logs import setup_logging
from runtime.rules import load_rules
from runtime.suppressions import load_suppression_list
from schemas.errors import ConfigError

DESCRIPTION = """Send archived Segment events through the raw topics, so they are masked,
stitched and deduplicated like live events.

PATH is a folder or s3://bucket/prefix laid out as Segment's S3 archive:
<source>/<day>/[<hour>/]<file>, day as YYYY-MM-DD or epoch milliseconds, files gzip or plain
newline-delimited JSON. The source folder names the source (the warehouse schema); Segment
names it by source id, so map ids with --source-map ID=NAME.

Resumable: finished files (and the last acknowledged line of an unfinished one) are kept in a
checkpoint file; rerunning continues where it stopped, and sending an event twice is harmless
(deduplicated by messageId). --dry-run reads and validates everything and prints the counts
(without Kafka: suppressed users are not looked up)."""


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from exc


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="archive folder or s3://bucket/prefix")
    parser.add_argument("--from", dest="day_from", type=_day, help="first day (YYYY-MM-DD)")
    parser.add_argument("--to", dest="day_to", type=_day, help="last day, inclusive")
    parser.add_argument(
        "--source", action="append", default=[], help="only this source (repeatable)"
    )
    parser.add_argument(
        "--source-map",
        action="append",
        default=[],
        metavar="FOLDER=NAME",
        help="archive folder (e.g. a Segment source id) -> source name (repeatable)",
    )
    parser.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="count and validate, send nothing",
    )
    parser.add_argument(
        "--restart",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="ignore the checkpoint and send every file again",
    )
    add_settings_options(parser, BackfillSettings)


def _mapping(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        folder, sep, name = pair.partition("=")
        if not sep or not folder or not name:
            raise ConfigError(f"--source-map {pair!r}: expected FOLDER=NAME")
        out[folder] = name
    return out


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(BackfillSettings, args)
    obs = settings.observability
    setup_logging("backfill", obs.log_level, obs.log_format)
    if args.day_from and args.day_to and args.day_from > args.day_to:
        raise ConfigError("--from is after --to")
    rules = load_rules(obs.rules_file)
    store = open_store(
        args.path, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
    all_files, ignored = list_files(store)
    known = {s.name for s in rules.sources}
    sources = source_names(
        {f.source_folder for f in all_files}, _mapping(args.source_map), set(args.source), known
    )
    files = select_files(all_files, sources, args.day_from, args.day_to)
    print(
        f"{store.describe()}: {len(files)} files selected of {len(all_files)} "
        f"({len(ignored)} other paths ignored), sources: "
        + (", ".join(f"{k}->{v}" if k != v else k for k, v in sources.items()) or "none")
    )
    checkpoint = None
    if not args.dry_run:
        path = settings.checkpoint_for(args.path)
        if args.restart and path.exists():
            path.unlink()
        checkpoint = Checkpoint(path).load()
        print(f"checkpoint: {path}")
    suppressions = None
    if settings.honour_suppressions and not args.dry_run:
        suppressions = load_suppression_list(settings.kafka, settings.suppressions_wait_s)
    progress = Progress("backfill", unit="events")
    backfill = Backfill(
        settings, store, sources, checkpoint, suppressions=suppressions, progress=progress.advance
    )
    done_files = 0

    def file_done(_f: object) -> None:
        nonlocal done_files
        done_files += 1
        progress.note = f"files {done_files}/{len(files)}"

    backfill.on_file_done = file_done
    try:
        report = backfill.run(files, dry_run=args.dry_run)
    finally:
        if checkpoint is not None:
            checkpoint.close()
        if suppressions is not None:
            suppressions.stop()
    progress.finish()
    print(report.summary(args.dry_run))
    if args.dry_run and report.by_day:
        for day, count in sorted(report.by_day.items()):
            print(f"  {day}: {count}")
    if report.invalid:
        print(f"{report.invalid} invalid lines were not sent (listed above)")
        return 65  # EX_DATAERR: the rest was sent; fix or drop those lines
    return 0
