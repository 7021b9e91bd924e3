from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cli.commands.replay import parse_when
from cli.main import build_parser
from schemas.errors import ConfigError

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_relative_and_absolute_times() -> None:
    assert parse_when("-2h", NOW) == NOW - timedelta(hours=2)
    assert parse_when("-90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_when("-1.5d", NOW) == NOW - timedelta(hours=36)
    assert parse_when("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_when("2024-05-01T10:00:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    with pytest.raises(ConfigError):
        parse_when("yesterday")


def test_reset_needs_exactly_one_target() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["replay", "reset", "--group", "g", "--topic", "t"])
    with pytest.raises(SystemExit):
        parser.parse_args(
            ["replay", "reset", "--group", "g", "--topic", "t", "--to-earliest", "--to-latest"]
        )
    args = parser.parse_args(
        ["replay", "reset", "--group", "g", "--topic", "t:0", "--topic", "u", "--to-offset", "5"]
    )
    assert args.topic == ["t:0", "u"] and args.to_offset == 5 and not args.force


def test_copy_accepts_relative_start_with_equals() -> None:
    args = build_parser().parse_args(
        ["replay", "copy", "--from-topic", "a", "--to-topic", "b", "--start=-2h", "--rate", "50"]
    )
    assert args.start == "-2h" and args.rate == 50.0 and args.end is None
