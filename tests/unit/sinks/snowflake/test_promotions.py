"""The rules of a promotion: keys and columns, types, the plan, the sink's mapping, the SQL."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any
from unittest.mock import MagicMock

import pytest

from schemas.naming import unmapped_key
from sinks.snowflake import strict
from sinks.snowflake.errors import WarehouseFatalError
from sinks.snowflake.promotions import (
    PROMOTIONS,
    Promotion,
    PromotionError,
    apply_promotions,
    backfill_statement,
    cell_text,
    column_problem,
    default_column,
    dump_unmapped,
    infer_type,
    load_unmapped,
    plan_promotion,
    read_promotions,
    registry_query,
    scan_query,
    split_key,
    value_kind,
)
from sinks.snowflake.rows import TableRow
from sinks.snowflake.tables import Kind, fixed_columns


@pytest.mark.parametrize(
    "path", [("properties", "a-b"), ("properties", "a.b", "c\\d"), ("traits", ""), ("plan",)]
)
def test_split_key_reverses_unmapped_key(path: tuple[str, ...]) -> None:
    assert split_key(unmapped_key(path)) == list(path)


@pytest.mark.parametrize(
    ("key", "column"),
    [
        ("properties.a-b", "a_b"),
        ("properties.address.city", "address_city"),
        ("traits.planName", "plan_name"),
        ("context.app.build", "context_app_build"),
        ("plan", "plan"),  # a misfit's or a capped column's key is the column
        ("properties.日本", ""),
        ("properties.a\\.b", "a_b"),
    ],
)
def test_default_column_follows_the_naming_rules(key: str, column: str) -> None:
    assert default_column(key) == column


@pytest.mark.parametrize(
    ("column", "table", "problem"),
    [
        ("", "tracks", "normalises to nothing"),
        ("Plan Name", "tracks", "not a warehouse column name"),
        ("name", "pages", "segflow writes itself"),
        ("event_text", "order_completed", "segflow writes itself"),
        ("context_ip", "order_completed", "segflow writes itself"),
        ("_segflow_x", "users", "segflow writes itself"),
        ("_unmapped", "users", "segflow writes itself"),
    ],
)
def test_columns_a_promotion_may_not_take(column: str, table: str, problem: str) -> None:
    assert problem in (column_problem(column, table) or "")


def test_columns_a_promotion_may_take() -> None:
    assert column_problem("a_b_text", "order_completed") is None
    assert column_problem("context_ip", "users") is None  # profiles hold no context


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2], "NUMBER"),
        ([1, 2.5], "FLOAT"),
        ([True, False], "BOOLEAN"),
        (["2026-01-05T12:00:00Z", "2026-01-06T00:00:00+02:00"], "TIMESTAMP_TZ"),
        (["2026-01-05T12:00:00Z", "soon"], "VARCHAR"),
        ([1, "x"], "VARCHAR"),
        ([True, 1], "VARCHAR"),
        ([[1, 2], {"a": 1}], "VARCHAR"),  # objects and arrays are kept as JSON text
        ([10**40], "FLOAT"),  # beyond 38 digits, as the sink types it
    ],
)
def test_infer_type_is_the_narrowest_holding_every_value(values: list[Any], expected: str) -> None:
    assert infer_type(value_kind(v) for v in values) == expected


def test_cell_text_is_what_a_cast_turns_into_the_value() -> None:
    assert cell_text(12, "NUMBER") == "12"
    assert cell_text(3, "FLOAT") == "3.0"
    assert cell_text(False, "BOOLEAN") == "false"
    assert cell_text("2026-01-05T14:00:00+02:00", "TIMESTAMP_TZ") == "2026-01-05T12:00:00+00:00"
    assert cell_text([1, "x"], "VARCHAR") == '[1,"x"]'
    assert cell_text(True, "VARCHAR") == "true"
    assert cell_text("pro", "VARCHAR") == "pro"


def test_unmapped_documents_round_trip_and_empty_is_null() -> None:
    doc = load_unmapped('{"properties.a-b":"x","n":123456789012345678901234567890}')
    assert doc["n"] == 123456789012345678901234567890  # exact, not a float
    del doc["properties.a-b"]
    assert load_unmapped(dump_unmapped(doc)) == doc
    assert dump_unmapped({}) is None
    assert load_unmapped(None) == {}


COLS = {**fixed_columns("plan_chosen"), "a_b": "NUMBER", "score": "NUMBER"}


def plan(**kw: Any) -> Any:
    args: dict[str, Any] = {
        "schema": "web",
        "table": "plan_chosen",
        "key": "properties.a-b",
        "columns": COLS,
        "values": [("x", False), ("y", False)],
        "registered": None,
    }
    return plan_promotion(**{**args, **kw})


def test_a_collision_losers_default_column_is_refused_and_another_planned() -> None:
    with pytest.raises(PromotionError, match=r"already holds a value in 2 of the 2 rows.*--column"):
        plan(values=[("x", True), ("y", True)])
    p = plan(column="a_b_text")
    assert (p.column, p.column_type, p.column_exists, p.movable, p.stays) == (
        "a_b_text",
        "VARCHAR",
        False,
        2,
        0,
    )
    assert "column     a_b_text VARCHAR (added)" in p.describe()


class _Doc(dict[str, Any]):
    """A value whose copies still alive can be counted (weak references)."""


def test_a_plan_counts_the_values_it_reads_and_holds_none_of_them() -> None:
    alive: list[weakref.ref[_Doc]] = []
    most = 0

    def values() -> Iterator[tuple[Any, bool]]:
        nonlocal most
        for i in range(1_000):
            most = max(most, sum(r() is not None for r in alive[-50:]))
            doc = _Doc(n=i)
            alive.append(weakref.ref(doc))
            yield doc, False
            del doc

    p = plan(values=values(), column="a_b_text")
    assert (p.movable, p.occupied, p.kinds) == (1_000, 0, {"VARCHAR": 1_000})
    assert most <= 1  # each value is dropped once counted: any table plans in constant memory


def test_values_that_do_not_fit_the_asked_type_are_refused_with_counts() -> None:
    with pytest.raises(PromotionError, match=r"2 values of properties.a-b do not fit NUMBER"):
        plan(column="n", column_type="NUMBER", values=[("x", False), (1, False), (True, False)])
    with pytest.raises(PromotionError, match=r"\(1 BOOLEAN, 1 VARCHAR\)"):
        plan(column="n", column_type="NUMBER", values=[("x", False), (1, False), (True, False)])


def test_an_existing_column_keeps_its_type() -> None:
    p = plan(key="score", values=[(2, False), (3, False)])
    assert (p.column, p.column_type, p.column_exists) == ("score", "NUMBER", True)
    with pytest.raises(PromotionError, match=r"is NUMBER, not VARCHAR"):
        plan(key="score", column_type="VARCHAR", values=[(2, False)])
    with pytest.raises(PromotionError, match=r"do not fit NUMBER"):
        plan(key="score", values=[("two", False)])  # a misfit stays a misfit


def test_a_table_at_the_column_limit_takes_no_new_column() -> None:
    full = {**COLS, **{f"c{i}": "VARCHAR" for i in range(1000 - len(COLS))}}
    with pytest.raises(PromotionError, match=r"has 1000 columns"):
        plan(column="a_b_text", columns=full)
    assert plan(key="score", columns=full, values=[(1, False)]).column == "score"


def test_nothing_to_promote_is_refused_unless_registered() -> None:
    with pytest.raises(PromotionError, match=r"no row of web\.plan_chosen holds"):
        plan(values=[])
    done = Promotion("plan_chosen", "properties.a-b", "a_b_text", "VARCHAR")
    p = plan(values=[], registered=done)
    assert (p.column, p.registered, p.movable) == ("a_b_text", True, 0)
    with pytest.raises(PromotionError, match="already promoted to column a_b_text"):
        plan(registered=done, column="other")


def row(values: dict[str, Any], unmapped: dict[str, Any] | None) -> TableRow:
    return TableRow("web", "plan_chosen", Kind.APPEND, values, unmapped, "m1")


PROMOTED = {
    "web": {"plan_chosen": [Promotion("plan_chosen", "properties.a-b", "a_b_text", "VARCHAR")]}
}


def test_the_sink_writes_a_promoted_key_into_its_column() -> None:
    rows = [row({"id": "m1", "a_b": 1}, {"properties.a-b": "x", "other": 2})]
    out = apply_promotions(rows, PROMOTED)
    assert out[0].values == {"id": "m1", "a_b": 1, "a_b_text": "x"}
    assert out[0].unmapped == {"other": 2}
    assert rows[0].unmapped == {"properties.a-b": "x", "other": 2}  # input unchanged
    only = apply_promotions([row({"id": "m1"}, {"properties.a-b": [1, "y"]})], PROMOTED)
    assert only[0].values["a_b_text"] == '[1,"y"]' and only[0].unmapped is None


def test_the_sink_keeps_a_value_whose_column_is_taken_or_type_differs() -> None:
    taken = [row({"id": "m1", "a_b_text": "own"}, {"properties.a-b": "x"})]
    assert apply_promotions(taken, PROMOTED) == taken
    numeric = {"web": {"plan_chosen": [Promotion("plan_chosen", "properties.a-b", "n", "NUMBER")]}}
    misfit = [row({"id": "m1"}, {"properties.a-b": "x"})]
    assert apply_promotions(misfit, numeric) == misfit
    other_table = [
        TableRow("web", "tracks", Kind.APPEND, {"id": "m1"}, {"properties.a-b": 1}, "m1")
    ]
    assert apply_promotions(other_table, PROMOTED) is other_table


def test_the_sink_adds_a_registered_column_its_table_lacks() -> None:
    cursor = MagicMock()
    cursor.fetchall.return_value = [("PLAN_CHOSEN", "properties.a-b", "A_B_TEXT", "VARCHAR")]
    run = MagicMock(return_value=cursor)
    tables = {"plan_chosen": {"id": "VARCHAR"}, PROMOTIONS: {}}
    entries = read_promotions(run, "web", tables)
    assert entries == {
        "plan_chosen": [Promotion("plan_chosen", "properties.a-b", "a_b_text", "VARCHAR")]
    }
    statements = [c.args[0] for c in run.call_args_list]
    assert statements[1] == (
        'ALTER TABLE "WEB"."PLAN_CHOSEN" ADD COLUMN IF NOT EXISTS "A_B_TEXT" VARCHAR'
    )
    assert tables["plan_chosen"]["a_b_text"] == "VARCHAR"
    assert read_promotions(run, "web", {"plan_chosen": {}}) == {}  # no registry: no query


def test_a_promoted_column_the_warehouse_refuses_does_not_stop_the_sink() -> None:
    cursor = MagicMock()
    cursor.fetchall.return_value = [("PLAN_CHOSEN", "properties.a-b", "A_B_TEXT", "VARCHAR")]

    def run(sql: str, *args: Any, **kw: Any) -> Any:
        if sql.startswith("ALTER"):
            raise WarehouseFatalError("columns_per_table")
        return cursor

    tables: dict[str, dict[str, str]] = {"plan_chosen": {"id": "VARCHAR"}, PROMOTIONS: {}}
    assert read_promotions(run, "web", tables) == {}  # the key stays in _unmapped
    assert "a_b_text" not in tables["plan_chosen"]


def test_sql_text_passes_snowflakes_rules_with_the_longest_names() -> None:
    long = "c" * 255
    for sql in (
        scan_query("web", long, long, True),
        scan_query("web", long, long, False),
        backfill_statement("web", long, f"_segflow.{'s' * 255}", long, "NUMBER"),
        registry_query("w" * 255),
    ):
        strict.check_text(sql)
    update = backfill_statement("web", "plan_chosen", "_segflow.st", "a_b_text", "NUMBER")
    # documented Snowflake functions only (TO_JSON, PARSE_JSON, CAST), guarded on the row as read
    assert 'CAST(s."VALUE" AS NUMBER(38,0))' in update
    assert 'TO_JSON("WEB"."PLAN_CHOSEN"."_UNMAPPED") = s."OLD_UNMAPPED"' in update
    assert update.endswith('"WEB"."PLAN_CHOSEN"."A_B_TEXT" IS NULL')
    assert 'GET("_UNMAPPED", ?)' in scan_query("web", "t", "c", True)
