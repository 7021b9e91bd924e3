"""segflow replay reset|copy."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cli.options import add_settings_options, settings_from_args
from cli.output import add_output_option, to_json, wants_json
from cli.progress import Progress
from runtime.logs import setup_logging
from runtime.replay import (
    GroupOffsets,
    PartitionReset,
    ResetTarget,
    TopicCopier,
    format_copy_plan,
    format_reset_plan,
    parse_partition_spec,
)
from runtime.settings import KafkaSettings, ObservabilitySettings, WarehouseSettings
from schemas.errors import ConfigError
from schemas.timestamps import parse_timestamp
from sinks.snowflake.session import WarehouseSession
from sinks.snowflake.warehouse_offsets import WarehouseOffsets

DESCRIPTION = """Replay for SREs.

  segflow replay reset --group G --topic T[:0,1] --to-timestamp 2024-05-01T10:00:00Z [--dry-run]
      Move a consumer group's committed offsets on the chosen topics (and partitions) to a
      timestamp, an offset, the earliest or the latest record. --dry-run prints the plan only.
      A group with live members is refused; --force waits (up to --wait-s) for them to leave.

  segflow replay copy --from-topic A --to-topic B --start=-2h [--end TIME] [--dry-run]
      Copy a time range of one topic into another (raw into raw, to reprocess after a processor
      fix), keeping keys, headers and timestamps; each copy carries the segflow-replay header.
      The sink merges on messageId, so replaying into it never duplicates rows.

Times are ISO-8601 (UTC when no offset is given) or relative to now: -30m, -2h, -1d
(write relative times with "=", e.g. --start=-2h, so they are not read as options).
Topic names are given in full (with the topic prefix, if any)."""

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An ISO-8601 timestamp (naive = UTC) or a time relative to now like -90m, -2h, -1d."""
    match = _RELATIVE.match(text.strip())
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = parse_timestamp(text)
    except ValueError as exc:
        raise ConfigError(f"{text!r} is neither ISO-8601 nor a relative time like -2h") from exc
    if parsed is None:
        raise ConfigError("an empty time was given")
    return parsed


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="replay_action", metavar="ACTION", required=True)

    reset = sub.add_parser("reset", help="move a consumer group's committed offsets")
    reset.add_argument("--group", required=True, help="consumer group id")
    reset.add_argument(
        "--topic",
        action="append",
        required=True,
        metavar="TOPIC[:P,P]",
        help="topic, optionally with partitions (topic:0,3); repeat for more topics",
    )
    where = reset.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-timestamp", metavar="TIME", help="first record at or after TIME")
    where.add_argument("--to-offset", type=int, metavar="N", help="absolute offset N")
    where.add_argument(
        "--to-earliest",
        dest="to_end",
        action="store_const",
        const="earliest",
        help="the oldest retained record",
    )
    where.add_argument(
        "--to-latest",
        dest="to_end",
        action="store_const",
        const="latest",
        help="the end of the log",
    )
    reset.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="print the plan, change nothing",
    )
    reset.add_argument(
        "--force",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="do not refuse a group with live members: wait up to --wait-s for them to leave",
    )
    reset.add_argument(
        "--wait-s", type=float, default=60.0, help="with --force, how long to wait (default 60)"
    )
    reset.add_argument(
        "--warehouse-offsets",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the group is segflow's sink: move its offsets in the warehouse too (the sink "
        "seeks to those, not to Kafka's)",
    )
    reset.add_argument(
        "--sink-control-schema",
        default="_segflow",
        help="schema of the sink's _segflow_offsets table (default _segflow)",
    )
    add_output_option(reset)
    add_settings_options(reset, KafkaSettings)
    add_settings_options(reset, WarehouseSettings)
    add_settings_options(reset, ObservabilitySettings)

    copy = sub.add_parser("copy", help="copy a time range of one topic into another")
    copy.add_argument("--from-topic", required=True, help="source topic")
    copy.add_argument("--to-topic", required=True, help="destination topic (may be the source)")
    copy.add_argument("--start", required=True, metavar="TIME", help="first record time")
    copy.add_argument(
        "--end", metavar="TIME", help="records before TIME (default: up to the current end)"
    )
    copy.add_argument("--rate", type=float, help="at most this many records a second")
    copy.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="print the plan and the count only",
    )
    add_output_option(copy)
    add_settings_options(copy, KafkaSettings)
    add_settings_options(copy, ObservabilitySettings)


def _target(args: argparse.Namespace) -> ResetTarget:
    try:
        if args.to_timestamp is not None:
            return ResetTarget.at_timestamp(parse_when(args.to_timestamp))
        if args.to_offset is not None:
            return ResetTarget.at_offset(args.to_offset)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return ResetTarget(args.to_end)


def _run_reset(args: argparse.Namespace, kafka: KafkaSettings) -> int:
    try:
        specs = [parse_partition_spec(s) for s in args.topic]
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    target = _target(args)
    offsets = GroupOffsets(kafka, args.group)
    keys = offsets.resolve(specs)
    plan = offsets.plan(keys, target)
    if not args.warehouse_offsets:
        return _reset(args, offsets, target, plan, None)
    warehouse = settings_from_args(WarehouseSettings, args)
    with WarehouseSession(warehouse, "replay", create_database=False) as session:
        stored = WarehouseOffsets(session, args.sink_control_schema, args.group)
        owned = stored.read(keys)
        # The sink resumes from the warehouse's offsets: those are the current position.
        plan = [replace(row, current=owned.get((row.topic, row.partition))) for row in plan]
        return _reset(args, offsets, target, plan, stored)


def _reset(
    args: argparse.Namespace,
    offsets: GroupOffsets,
    target: ResetTarget,
    plan: list[PartitionReset],
    stored: WarehouseOffsets | None,
) -> int:
    document: dict[str, Any] = {
        "group": args.group,
        "target": target.describe(),
        "current_from": "warehouse" if stored is not None else "kafka",
        "partitions": [{**asdict(r), "re_read": r.change, "lag_after": r.lag_after} for r in plan],
        "dry_run": args.dry_run,
    }
    say = _notes(args)
    say(format_reset_plan(args.group, target, plan))
    if stored is not None:
        say("current offsets: the sink's, from the warehouse (_segflow_offsets)")
    if args.dry_run:
        members = offsets.live_members()
        document["live_members"] = len(members)
        if members:
            say(f"note: the group has {len(members)} live member(s); a reset would be refused")
        say("dry run: nothing changed")
        _print_json(args, document)
        return 0
    offsets.apply(plan, force=args.force, wait_s=args.wait_s)
    if stored is not None:
        stored.move([(r.topic, r.partition, r.current, r.target) for r in plan])
    where = " (Kafka and warehouse)" if stored is not None else ""
    say(f"reset {len(plan)} partitions of group {args.group}{where}")
    _print_json(args, document)
    return 0


def _notes(args: argparse.Namespace) -> Callable[[str], None]:
    """Where the human-readable lines go: stdout, or stderr when stdout carries JSON."""
    if wants_json(args):
        return lambda line: print(line, file=sys.stderr)
    return print


def _print_json(args: argparse.Namespace, document: dict[str, Any]) -> None:
    if wants_json(args):
        print(to_json(document))


def _run_copy(args: argparse.Namespace, kafka: KafkaSettings) -> int:
    start = parse_when(args.start)
    end = parse_when(args.end) if args.end else None
    copier = TopicCopier(kafka, args.from_topic, args.to_topic, rate=args.rate)
    plan = copier.plan(start, end)
    document: dict[str, Any] = {
        "from_topic": args.from_topic,
        "to_topic": args.to_topic,
        "start": start.isoformat(),
        "end": end.isoformat() if end is not None else None,
        "partitions": [{**asdict(r), "records": r.count} for r in plan],
        "dry_run": args.dry_run,
    }
    say = _notes(args)
    say(format_copy_plan(args.from_topic, args.to_topic, start, end, plan))
    if args.dry_run:
        say("dry run: nothing copied")
        _print_json(args, document)
        return 0
    progress = Progress("replay copy", total=sum(r.count for r in plan), unit="records")
    stats = copier.run(plan, progress=progress.advance)
    progress.finish()
    say(f"copied {stats.records} records ({stats.bytes} bytes) to {args.to_topic}")
    document.update(copied_records=stats.records, copied_bytes=stats.bytes)
    _print_json(args, document)
    return 0


def run(args: argparse.Namespace) -> int:
    kafka = settings_from_args(KafkaSettings, args)
    obs = settings_from_args(ObservabilitySettings, args)
    setup_logging("replay", obs.log_level, obs.log_format)
    if args.replay_action == "reset":
        return _run_reset(args, kafka)
    return _run_copy(args, kafka)
