from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from cli.commands.schema import render_json, render_table
from cli.main import main
from sinks.snowflake.schema_review import ChangeSummary

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ITEMS = [
    ChangeSummary("web", "tracks", "plan", "misfit", "NUMBER", "VARCHAR", "sink", 5, T0, T0, "m1"),
    ChangeSummary("web", "users", "age", "column_added", "NUMBER", "NUMBER", None, 1, T0, T0, None),
]


def test_table_shows_the_type_conflict_and_counts() -> None:
    lines = render_table(ITEMS).splitlines()
    assert lines[0].split(" | ")[0].strip() == "last_seen"
    assert "VARCHAR -> NUMBER" in lines[2] and lines[2].rstrip().endswith("5")
    assert "| NUMBER " in lines[3]
    assert lines[-1] == "(2 listed)"


def test_json_is_one_array_of_objects() -> None:
    items = orjson.loads(render_json(ITEMS))
    assert [x["change"] for x in items] == ["misfit", "column_added"]
    assert items[0]["first_seen"] == "2026-01-02T03:04:05+00:00"
    assert orjson.loads(render_json([])) == []


def test_bad_since_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "changes", "--since", "yesterday"]) == 78
    assert "e.g. 90m, 24h, 7d" in capsys.readouterr().err
