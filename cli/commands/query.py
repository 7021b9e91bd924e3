"""segflow query "SQL": run SQL against the configured warehouse and print a table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from cli.options import add_settings_options, settings_from_args
from cli.output import add_output_option, records, to_json, wants_json
from runtime.settings import WarehouseSettings
from schemas.errors import FatalError

DESCRIPTION = """Run one SQL statement against the warehouse (the local emulator by default)
and print the result as a table, e.g. segflow query "select event, count(*) from web.tracks
group by 1". Use --schema to resolve unqualified table names in a source's schema."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", help="the SQL statement to run")
    parser.add_argument("--schema", default=None, help="default schema (a source name)")
    parser.add_argument("--max-rows", type=int, default=200, help="rows to print (default 200)")
    add_output_option(parser)
    add_settings_options(parser, WarehouseSettings)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: a header, a rule, one line a row; NULL for None."""
    cells = [[("NULL" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    line = " | ".join(c.ljust(widths[i]) for i, c in enumerate(columns))
    rule = "-+-".join("-" * w for w in widths)
    body = [" | ".join(v.ljust(widths[i]) for i, v in enumerate(row)) for row in cells]
    return "\n".join([line, rule, *body])


def run(args: argparse.Namespace) -> int:
    warehouse = settings_from_args(WarehouseSettings, args)
    import snowflake.connector

    kwargs = warehouse.connect_kwargs("query")
    if args.schema:
        kwargs["schema"] = args.schema.upper()
    try:
        conn = snowflake.connector.connect(**kwargs)
    except snowflake.connector.errors.Error as exc:
        raise FatalError(f"cannot connect to the warehouse: {exc}") from exc
    try:
        cur = conn.cursor()
        try:
            cur.execute(args.sql)
        except snowflake.connector.errors.Error as exc:
            print(f"query failed: {exc}", file=sys.stderr)
            return 1
        columns = [d[0] for d in (cur.description or [])]
        if not columns:
            if wants_json(args):
                print(to_json({"rows_affected": cur.rowcount}))
            else:
                print(f"ok ({cur.rowcount} rows affected)")
            return 0
        rows = cur.fetchmany(args.max_rows + 1)
        shown, truncated = rows[: args.max_rows], len(rows) > args.max_rows
        if wants_json(args):
            print(to_json({"columns": columns, "rows": records(columns, shown), "more": truncated}))
            return 0
        print(format_table(columns, shown))
        more = " (more not shown)" if truncated else ""
        print(f"({len(shown)} rows{more})")
    finally:
        conn.close()
    return 0
