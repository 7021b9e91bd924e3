from __future__ import annotations

import pytest

from cli.commands.backfill import _mapping
from cli.main import build_parser
from schemas.errors import ConfigError


def test_source_map_pairs() -> None:
    assert _mapping(["Xy12=web", "Ab=app"]) == {"Xy12": "web", "Ab": "app"}
    for bad in ("Xy12", "=web", "Xy12="):
        with pytest.raises(ConfigError):
            _mapping([bad])


def test_day_options_are_checked_by_the_parser() -> None:
    parser = build_parser()
    args = parser.parse_args(["backfill", "/tmp/a", "--from", "2024-05-01", "--to", "2024-05-02"])
    assert str(args.day_from) == "2024-05-01" and str(args.day_to) == "2024-05-02"
    with pytest.raises(SystemExit):
        parser.parse_args(["backfill", "/tmp/a", "--from", "May 1"])
