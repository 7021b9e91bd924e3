"""segflow forget --user-id ... | --file IDS [--unsuppress]."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from cli.options import add_settings_options, settings_from_args
from deletion import ForgetSettings, Forgetter
from deletion.sink_progress import data_ends, stored_offsets, wait_for_sinks
from runtime.logs import setup_logging
from runtime.settings import KafkaSettings, ObservabilitySettings, WarehouseSettings
from runtime.suppressions import publish_suppressions
from schemas.errors import ConfigError
from sinks.snowflake.session import WarehouseSession

DESCRIPTION = """Delete users' rows everywhere and keep them out.

For each user id: the anonymous ids linked to it are read from identity_map; the user (with
them) is put on the suppression list that the edge, backfills, the processors, the sink and
reverse ETL honour, so late events and replays cannot bring the user back; then every table of
every source schema (every schema of the warehouse holding segflow's tables, whether the rules
name it or not: tracks, per-event tables, identifies, users, pages, screens, groups, aliases,
identity_map, the audit archive) loses the user's rows, and _segflow_deletions records a
receipt. Then forget waits until every sink group has loaded past the end the clean and
identity topics had when the suppression was published (their offsets in _segflow_offsets; at
most --forget-sink-wait-s, progress every --forget-progress-s) and deletes once more what
landed meanwhile. If the sinks do not get there in time it says which partitions are behind
and exits non-zero; running it again is safe.

--unsuppress lifts the suppression (rows already deleted do not come back)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user-id", action="append", default=[], metavar="ID", help="a user id (repeatable)"
    )
    parser.add_argument("--file", type=Path, help="a file of user ids, one a line")
    parser.add_argument(
        "--source", action="append", default=[], help="only this source schema (repeatable)"
    )
    parser.add_argument("--reason", help="free text kept in the receipt, e.g. a ticket id")
    parser.add_argument(
        "--unsuppress",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="lift the suppression instead",
    )
    parser.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="count the rows, change nothing",
    )
    add_settings_options(parser, ForgetSettings)
    add_settings_options(parser, KafkaSettings)
    add_settings_options(parser, WarehouseSettings)
    add_settings_options(parser, ObservabilitySettings)


def user_ids(given: list[str], file: Path | None) -> list[str]:
    """The ids given and those of the file (blank lines and # comments skipped), in order."""
    ids = [i.strip() for i in given]
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc}") from exc
        ids += [line.strip() for line in text.splitlines()]
    out = list(dict.fromkeys(i for i in ids if i and not i.startswith("#")))
    if not out:
        raise ConfigError("no user id given (--user-id or --file)")
    return out


def run(args: argparse.Namespace) -> int:
    kafka = settings_from_args(KafkaSettings, args)
    warehouse = settings_from_args(WarehouseSettings, args)
    obs = settings_from_args(ObservabilitySettings, args)
    options = settings_from_args(ForgetSettings, args)
    setup_logging("forget", obs.log_level, obs.log_format)
    ids = user_ids(args.user_id, args.file)

    def publish(entries: dict[str, list[str]], reason: str, lift: bool) -> None:
        publish_suppressions(kafka, entries, reason=reason, lift=lift)

    with WarehouseSession(warehouse, "forget", create_database=False) as session:

        def barrier() -> Callable[[], None]:
            topics = [*kafka.topics.all_clean(), kafka.topics.identity]
            ends = data_ends(kafka, topics)
            filled = sum(1 for e in ends.values() if e)
            print(
                f"suppression published; the sinks must load past {filled} partitions' "
                "current ends before the final pass"
            )

            def wait() -> None:
                groups = wait_for_sinks(
                    lambda: stored_offsets(session, options.control_schema),
                    ends,
                    options.groups(),
                    timeout_s=options.sink_wait_s,
                    report_every_s=options.progress_s,
                )
                if groups:
                    print(f"sinks past the suppression: {', '.join(groups)}")

            return wait

        forgetter = Forgetter(
            session,
            args.source or None,
            publish,
            barrier=barrier if options.sink_wait_s > 0 else None,
        )
        if args.unsuppress:
            request_id = forgetter.unsuppress(ids, reason=args.reason)
            print(f"{request_id}: lifted the suppression of {len(ids)} users")
            return 0
        report = forgetter.forget(ids, reason=args.reason, dry_run=args.dry_run)
    print(f"{report.request_id}{' (dry run)' if args.dry_run else ''}")
    print(report.summary())
    return 0
