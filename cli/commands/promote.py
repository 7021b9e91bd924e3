"""segflow promote --source S --table T --key K [--column C] [--type X] [--dry-run]."""

from __future__ import annotations

import argparse

from cli.options import add_settings_options, settings_from_args
from runtime.logs import setup_logging
from runtime.settings import ObservabilitySettings, WarehouseSettings
from schemas.errors import FatalError
from sinks.snowflake.promote import Promoter, PromoteSettings
from sinks.snowflake.promotions import LAYOUT_MAX_AGE_S, TYPES, PromotionError
from sinks.snowflake.rows import schema_name
from sinks.snowflake.session import WarehouseSession

DESCRIPTION = f"""Move a key out of _unmapped into a typed column of its own, history included.

KEY is the key as _unmapped holds it: a property or trait path from the map's root
(properties.plan, traits.address.city; a "." inside a name is written "\\."), or, for a value
that did not fit its column or met the table's column cap, the column's name (plan). The column
is the one the naming rules give the key unless --column names another (needed when that name
is taken: a collision, an empty or reserved name). Its type is the narrowest that holds every
value present ({", ".join(TYPES)}) unless --type says otherwise; values that do not fit are
refused, counted by type. --dry-run prints the plan and changes nothing.

The promotion is registered first (_segflow_promotions): running sinks read the registry with
their layouts (every {LAYOUT_MAX_AGE_S:.0f} s), add the column and write the key into it from
then on (promote adds the column itself if no sink did within --promote-grace-s). Then one
transaction moves every row's value into the column, removes the key from _unmapped and records
a "promoted" row that segflow schema changes lists. --promote-grace-s after the registration,
promote sweeps again what sinks still on the old mapping loaded meanwhile, until a sweep finds
nothing. Running it again is safe and says when there is nothing left to move.
Exit status: 0 done, 1 refused or rows left behind (run it again), 78 bad options."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="the source (its warehouse schema)")
    parser.add_argument("--table", required=True, help="the table, e.g. tracks or order_completed")
    parser.add_argument("--key", required=True, help="the key as _unmapped holds it")
    parser.add_argument(
        "--column", default=None, help="the column to move it to (default: the key's)"
    )
    parser.add_argument(
        "--type",
        dest="column_type",
        type=str.upper,
        choices=TYPES,
        default=None,
        help="the column's type (default: the narrowest holding every value)",
    )
    parser.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="print the plan, change nothing",
    )
    add_settings_options(parser, PromoteSettings)
    add_settings_options(parser, WarehouseSettings)
    add_settings_options(parser, ObservabilitySettings)


def run(args: argparse.Namespace) -> int:
    warehouse = settings_from_args(WarehouseSettings, args)
    options = settings_from_args(PromoteSettings, args)
    obs = settings_from_args(ObservabilitySettings, args)
    setup_logging("promote", obs.log_level, obs.log_format)
    if 0 < options.grace_s <= LAYOUT_MAX_AGE_S and not args.dry_run:
        print(
            f"warning: a grace of {options.grace_s:g} s does not exceed the sinks' layout "
            f"refresh ({LAYOUT_MAX_AGE_S:g} s): rows a running sink loads may stay in _unmapped"
        )
    schema = schema_name(args.source)
    with WarehouseSession(warehouse, "promote", create_database=False) as session:
        promoter = Promoter(session, options, progress=print)
        try:
            report = promoter.promote(
                schema,
                args.table.lower(),
                args.key,
                column=args.column,
                column_type=args.column_type,
                dry_run=args.dry_run,
            )
        except PromotionError as exc:
            raise FatalError(f"refused: {exc}") from exc
    for line in report.summary():
        print(line)
    if report.left:
        print("a sink may still be loading with the old mapping: run the same command again")
        return 1
    return 0
