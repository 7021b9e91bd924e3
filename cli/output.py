"""How commands whose output is a table print it: a table for a person, JSON for a program.

Every such command takes ``--output table|json`` (`add_output_option`); with ``json`` it prints
one JSON document on stdout and nothing else there (notes go to stderr), so `| jq` works.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

OUTPUT_FORMATS = ("table", "json")


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        choices=OUTPUT_FORMATS,
        default="table",
        help="table: for a person (default); json: one JSON document on stdout, for a program",
    )


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "table") == "json"


def records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows as objects keyed by column name (JSON output of a table)."""
    return [dict(zip(columns, row, strict=False)) for row in rows]


def to_json(document: Any) -> str:
    """The JSON text of `document`; values JSON does not know (datetimes, decimals) as strings."""
    return json.dumps(document, default=str, indent=2, sort_keys=False)
