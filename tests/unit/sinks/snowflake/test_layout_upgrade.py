from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from sinks.snowflake.layout_upgrade import (
    LAYOUT_1_RESERVED,
    RowMove,
    TablePlan,
    candidates,
    distinct_rows,
    fits,
    freed_columns,
    key_column,
    map_root,
    new_column_type,
    plan_row,
    plan_table,
    update_sql,
)
from sinks.snowflake.tables import fixed_columns, reserved_columns


def test_the_names_each_table_frees_are_its_map_s_now() -> None:
    assert {"name", "category", "event", "group_id"} <= freed_columns("identifies")
    assert "user_id" not in freed_columns("identifies")
    assert {"name", "user_id", "anonymous_id", "channel"} <= freed_columns("users")
    assert freed_columns("users") == freed_columns("accounts")
    assert "id" not in freed_columns("users") and "received_at" not in freed_columns("users")
    assert "group_id" not in freed_columns("groups") and "name" in freed_columns("groups")
    assert "name" not in freed_columns("pages") and "event" in freed_columns("pages")
    assert "event" not in freed_columns("order_completed")
    assert "name" in freed_columns("order_completed")
    for table in ("identifies", "users", "pages", "order_completed"):
        assert not freed_columns(table) & set(fixed_columns(table))
        assert all(
            c in LAYOUT_1_RESERVED and c not in reserved_columns(table)
            for c in freed_columns(table)
        )


def test_tables_without_a_map_are_left_alone() -> None:
    assert [map_root(t) for t in ("tracks", "aliases", "identity_map", "_segflow_x")] == [None] * 4
    assert map_root("users") == "traits" and map_root("order_completed") == "properties"


@pytest.mark.parametrize(
    ("key", "column"),
    [
        ("traits.name", "name"),
        ("traits.Name", "name"),
        ("traits.user.id", "user_id"),  # a nested key naming the column
        ("name", "name"),  # the first layout: the column's own name
        ("properties.name", None),  # another map's
        ("traits.plan", None),  # never reserved
        ("traits.id", None),  # still reserved
        ("traits.na\\.me", None),  # a dot inside a key: "na_me"
    ],
)
def test_which_keys_hold_a_freed_column_s_value(key: str, column: str | None) -> None:
    assert key_column(key, "traits", freed_columns("users")) == column


def test_the_key_spelled_as_the_column_is_tried_first_and_the_bare_name_last() -> None:
    keys = ["name", "traits.NAME", "traits.name", "traits.Name", "traits.plan"]
    assert candidates(keys, "traits", freed_columns("identifies")) == {
        "name": ["traits.name", "traits.NAME", "traits.Name", "name"]
    }


def test_a_new_column_takes_the_type_most_of_its_values_have() -> None:
    assert new_column_type(Counter({"VARCHAR": 3, "NUMBER": 5})) == "NUMBER"
    assert new_column_type(Counter({"NUMBER": 3, "FLOAT": 1, "VARCHAR": 3})) == "FLOAT"
    assert new_column_type(Counter({"TIMESTAMP_TZ": 4, "VARCHAR": 1})) == "VARCHAR"
    assert new_column_type(Counter({"TIMESTAMP_TZ": 4})) == "TIMESTAMP_TZ"
    assert new_column_type(Counter()) is None


def test_a_value_moves_only_as_its_column_s_type() -> None:
    assert fits("VARCHAR", "x") and not fits("VARCHAR", 5) and not fits("VARCHAR", [1])
    assert fits("FLOAT", 5) and fits("FLOAT", 1.5) and not fits("NUMBER", 1.5)
    assert fits("BOOLEAN", True) and not fits("NUMBER", True)
    assert fits("TIMESTAMP_TZ", "2026-01-05T12:00:00Z") and not fits("TIMESTAMP_TZ", "x")
    assert not fits("VARIANT", {"a": 1})


def test_a_row_moves_the_first_candidate_that_fits_and_keeps_the_rest() -> None:
    keys = {"name": ["traits.name", "traits.Name", "name"]}
    unmapped = {"traits.name": 5, "traits.Name": "B", "name": "C", "traits.id": "x"}
    moved, rest = plan_row(unmapped, keys, {"name": "VARCHAR"})
    assert moved == {"name": "B"}
    assert rest == {"traits.name": 5, "name": "C", "traits.id": "x"}
    assert plan_row(unmapped, keys, {}) == ({}, unmapped)  # no column: nothing moves


def _rows(
    *items: tuple[str, dict[str, Any]],
) -> list[tuple[tuple[Any, ...], str | None, dict[str, Any]]]:
    return [((ident, "t", 0, i), None, u) for i, (ident, u) in enumerate(items)]


def test_a_table_plan_types_adds_moves_and_counts_what_stays() -> None:
    keys = candidates(["traits.name", "traits.user_id"], "traits", freed_columns("identifies"))
    rows = _rows(
        ("a", {"traits.name": "Ada"}),
        ("b", {"traits.name": 42, "traits.id": "x"}),
        ("c", {"traits.name": "C"}),
    )
    plan = plan_table("identifies", fixed_columns("identifies"), keys, rows, max_columns=1000)
    assert plan.add == {"name": "VARCHAR"} and plan.types == {"name": "VARCHAR"}
    assert [(m.identity[0], m.values, m.rest) for m in plan.moves] == [
        ("a", {"name": "Ada"}, None),
        ("c", {"name": "C"}, None),
    ]
    assert plan.kept == Counter({"name": 1}) and plan.moved() == Counter({"name": 2})


def test_an_existing_column_keeps_its_type_and_a_capped_table_takes_no_column() -> None:
    keys = {"name": ["traits.name"]}
    rows = _rows(("a", {"traits.name": "Ada"}), ("b", {"traits.name": 7}))
    columns = {**fixed_columns("identifies"), "name": "NUMBER"}
    plan = plan_table("identifies", columns, keys, rows, max_columns=1000)
    assert plan.add == {} and [m.values for m in plan.moves] == [{"name": 7}]
    capped = plan_table("identifies", fixed_columns("identifies"), keys, rows, max_columns=3)
    assert capped.add == {} and capped.moves == [] and capped.kept == Counter({"name": 2})


def test_copies_of_one_row_are_moved_once_and_differing_copies_not_at_all() -> None:
    keys = {"name": ["traits.name"]}
    same = [(("a", "t", 0, 1), None, {"traits.name": "A"})] * 2
    plan = plan_table("identifies", fixed_columns("identifies"), keys, same, 1000)
    assert len(plan.moves) == 1
    differ = [
        (("a", "t", 0, 1), None, {"traits.name": "A"}),
        (("a", "t", 0, 1), None, {"traits.name": "B"}),
    ]
    plan = plan_table("identifies", fixed_columns("identifies"), keys, differ, 1000)
    assert plan.moves == [] and plan.kept == Counter({"name": 1})


def test_the_update_sets_only_null_columns_of_the_rows_read() -> None:
    sql = update_sql(
        "web", "users", ("id",), True, {"name": "VARCHAR", "age": "NUMBER"}, ["age", "name"], 2
    )
    assert sql.startswith('UPDATE "WEB"."USERS" AS t SET "AGE" = s.column3::NUMBER(38,0), ')
    assert '"NAME" = s.column4::VARCHAR, "_UNMAPPED" = PARSE_JSON(s.column5)' in sql
    assert "FROM (SELECT * FROM VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)) AS s" in sql
    assert sql.endswith(
        'WHERE t."ID" = s.column1 AND COALESCE(t."_SEGFLOW_LOAD_ID", \'\') = s.column2 '
        'AND t."AGE" IS NULL AND t."NAME" IS NULL'
    )


def test_a_plan_is_moves_per_row() -> None:
    plan = TablePlan("t", {"name": ["traits.name"]})
    plan.moves.append(RowMove(("a",), None, {"name": "A"}, None))
    assert plan.moved() == Counter({"name": 1})


def test_distinct_rows_stream_one_identity_at_a_time() -> None:
    rows = [
        (("a",), None, {"k": 1}),
        (("a",), None, {"k": 1}),  # a copy that agrees
        (("b",), None, {"k": 1}),
        (("b",), None, {"k": 2}),  # a copy that differs
        (("c",), "L", {"k": 3}),
    ]
    read: list[int] = []

    def stream() -> Any:
        for i, row in enumerate(rows):
            read.append(i)
            yield row

    out = distinct_rows(stream())
    assert next(out) == ((("a",), None, {"k": 1}), True)
    assert read == [0, 1, 2]  # lazily: up to the next identity's first row
    assert list(out) == [((("b",), None, {"k": 1}), False), ((("c",), "L", {"k": 3}), True)]
