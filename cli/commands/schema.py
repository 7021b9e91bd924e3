"""segflow schema changes [--source S] [--since 24h] [--output table|json]."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cli.commands.query import format_table
from cli.options import add_settings_options, settings_from_args
from cli.output import add_output_option, to_json, wants_json
from runtime.settings import WarehouseSettings
from schemas.errors import ConfigError
from sinks.snowflake.ddl import quote
from sinks.snowflake.errors import classify
from sinks.snowflake.rows import schema_name
from sinks.snowflake.schema_review import ChangeSummary, parse_since, summarize_changes
from sinks.snowflake.session import connect_warehouse, login

DESCRIPTION = """Review the warehouse's schema drift.

segflow schema changes lists what the sink and the processors recorded in each source's
_segflow_schema_changes table: new tables and columns, widenings, misfits (values kept in
_unmapped because they do not fit their column), caps reached, promotions, and the processors'
new properties and type changes. One line per table, column, kind of change, types and stage,
with the number of occurrences, the first and last sighting and an example message id, the
most recent first. --output json prints them as one JSON array for scripts."""

_HEADER = ("last_seen", "first_seen", "schema", "table", "column", "change", "type", "by", "n")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="schema_command", metavar="ACTION", required=True)
    changes = sub.add_parser(
        "changes",
        help="list recorded schema changes with counts and first/last seen",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    changes.add_argument(
        "--source", action="append", default=[], help="only this source schema (repeatable)"
    )
    changes.add_argument(
        "--since",
        default=None,
        metavar="AGE",
        help="only changes seen this recently: a number and s, m, h, d or w (e.g. 90m, 24h, "
        "7d); default: all",
    )
    add_output_option(changes)
    add_settings_options(changes, WarehouseSettings)


def _type(s: ChangeSummary) -> str:
    if s.previous_type and s.column_type:  # a widening: the column's type before and after
        return f"{s.previous_type} -> {s.column_type}"
    if s.column_type and s.value_type and s.column_type != s.value_type:
        return f"{s.value_type} -> {s.column_type}"
    return s.column_type or s.value_type or ""


def render_table(items: Sequence[ChangeSummary]) -> str:
    """A plain-text table of the summaries, and a count line."""
    rows = [
        (
            s.last_seen.strftime("%Y-%m-%d %H:%M:%S"),
            s.first_seen.strftime("%Y-%m-%d %H:%M:%S"),
            s.schema,
            s.table,
            s.column,
            s.change,
            _type(s),
            s.detected_by or "",
            s.occurrences,
        )
        for s in items
    ]
    return f"{format_table(_HEADER, rows)}\n({len(items)} listed)"


def render_json(items: Sequence[ChangeSummary]) -> str:
    """One JSON array of objects (the fields of ChangeSummary)."""
    return to_json([s.as_json() for s in items])


@contextmanager
def warehouse_cursor(warehouse: WarehouseSettings, component: str) -> Iterator[Any]:
    """A cursor on the warehouse's database (which must exist), closed afterwards."""
    conn, database = login(warehouse, component, connect_warehouse)
    try:
        cur = conn.cursor()
        try:
            cur.execute(f"USE DATABASE {quote(database)}")
        except Exception as exc:
            raise classify(exc, statement="session") from exc
        yield cur
    finally:
        conn.close()


def run(args: argparse.Namespace) -> int:
    warehouse = settings_from_args(WarehouseSettings, args)
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    schemas = [schema_name(s) for s in args.source] or None
    with warehouse_cursor(warehouse, "schema") as cur:
        try:
            items = summarize_changes(cur, schemas=schemas, since=since)
        except Exception as exc:
            raise classify(exc, statement="select") from exc
    if wants_json(args):
        print(render_json(items))
    else:
        print(render_table(items))
    return 0
