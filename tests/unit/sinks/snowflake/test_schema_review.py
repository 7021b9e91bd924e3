from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cli.commands.schema import _type
from sinks.snowflake.schema_review import (
    ChangeSummary,
    changes_tables,
    parse_since,
    summarize_changes,
    summary_query,
)
from sinks.snowflake.strict import check_text

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ALL = frozenset(
    {
        "detected_at",
        "table_name",
        "column_name",
        "change",
        "column_type",
        "value_type",
        "occurrences",
        "example_message_id",
        "detected_by",
        "previous_type",
    }
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        (" 2W ", timedelta(weeks=2)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_since_forms(text: str, expected: timedelta) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "1.5h", "-3d", "0h", "3 days", "1y"])
def test_since_refuses_other_forms_naming_the_accepted_ones(text: str) -> None:
    with pytest.raises(ValueError, match=r"s, m, h, d or w"):
        parse_since(text)


def test_since_too_far_back_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too far back"):
        parse_since("999999999999w")


def test_schemas_without_the_required_columns_are_skipped() -> None:
    rows = [("WEB", c.upper()) for c in ALL] + [("OLD", "TABLE_NAME"), ("OLD", "CHANGE")]
    assert changes_tables(rows) == {"web": ALL}


def test_missing_columns_read_as_null_and_count_rows() -> None:
    old = frozenset({"detected_at", "table_name", "column_name", "change"})
    sql = summary_query("web", old, since=False)
    assert '"DETECTED_BY"' not in sql and "COUNT(*)" in sql and "WHERE" not in sql
    check_text(sql)
    full = summary_query("web", ALL, since=True)
    assert 'SUM(COALESCE("OCCURRENCES", 1))' in full
    assert '"DETECTED_AT" >= CAST(? AS TIMESTAMP_TZ)' in full
    assert 'FROM "WEB"."_SEGFLOW_SCHEMA_CHANGES"' in full
    check_text(full)


class FakeCursor:
    def __init__(self, answers: dict[str, list[Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, Sequence[Any] | None]] = []
        self._last: list[Any] = []

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        self.calls.append((sql, params))
        self._last = next((v for k, v in self.answers.items() if k in sql), [])
        return self

    def fetchall(self) -> list[Any]:
        return self._last


def test_summaries_are_merged_across_schemas_newest_first() -> None:
    layout = [(s, c.upper()) for s in ("WEB", "APP") for c in ALL]
    cur = FakeCursor(
        {
            "information_schema": layout,
            '"WEB"."_SEGFLOW_SCHEMA_CHANGES"': [
                ("tracks", "plan", "misfit", "NUMBER", "VARCHAR", "sink", None, 7, T0, T0, "m1"),
                (
                    "tracks",
                    "paid",
                    "column_widened",
                    "VARCHAR",
                    "BOOLEAN",
                    "sink",
                    "BOOLEAN",
                    1,
                    T0,
                    T0,
                    "m2",
                ),
            ],
            '"APP"."_SEGFLOW_SCHEMA_CHANGES"': [
                (
                    "users",
                    "age",
                    "column_added",
                    "NUMBER",
                    "NUMBER",
                    "sink",
                    None,
                    1,
                    T0,
                    "2026-01-03 00:00:00+00:00",
                    None,
                ),
            ],
        }
    )
    out = summarize_changes(cur, since=timedelta(hours=24), now=T0)
    assert [s.schema for s in out] == ["app", "web", "web"]
    assert out[2] == ChangeSummary(
        "web", "tracks", "plan", "misfit", "NUMBER", "VARCHAR", "sink", 7, T0, T0, "m1"
    )
    widened = out[1]
    assert (widened.change, widened.previous_type, widened.column_type) == (
        "column_widened",
        "BOOLEAN",
        "VARCHAR",
    )
    assert _type(widened) == "BOOLEAN -> VARCHAR"
    assert out[0].last_seen == datetime(2026, 1, 3, tzinfo=UTC)
    # one listing query, then one query per schema, each bound to the cut-off
    assert len(cur.calls) == 3
    assert all(p == [(T0 - timedelta(hours=24)).isoformat()] for _, p in cur.calls[1:])


def test_a_schema_asked_for_without_the_table_gives_nothing() -> None:
    cur = FakeCursor({"information_schema": [("WEB", c.upper()) for c in ALL]})
    assert summarize_changes(cur, schemas=["nope"], since=None) == []
    assert len(cur.calls) == 1
