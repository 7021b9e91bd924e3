from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sinks.snowflake.evolution import (
    LADDER,
    SchemaChange,
    Widening,
    column_type_from_warehouse,
    fit,
    looks_like_timestamp,
    on_ladder,
    plan,
    unify,
    value_type,
    widen_target,
)
from sinks.snowflake.rows import TableRow
from sinks.snowflake.tables import Kind, fixed_columns


def row(table: str = "order_completed", mid: str = "m", **values: Any) -> TableRow:
    return TableRow("web", table, Kind.APPEND, {"id": mid, **values}, None, mid)


def test_value_types() -> None:
    assert value_type(None) is None
    assert value_type(True) == "BOOLEAN"
    assert value_type(3) == "NUMBER"
    assert value_type(10**40) == "FLOAT"
    assert value_type(2.5) == "FLOAT"
    assert value_type("hello") == "VARCHAR"
    assert value_type("2026-01-05T12:00:00.123Z") == "TIMESTAMP_TZ"
    assert value_type(datetime(2026, 1, 1, tzinfo=UTC)) == "TIMESTAMP_TZ"
    assert not looks_like_timestamp("2026-13-45T99:00:00Z")
    assert not looks_like_timestamp("2026-01-05")


def test_fit_and_unify() -> None:
    assert fit("VARCHAR", "NUMBER") == "ok"
    assert fit("FLOAT", "NUMBER") == "ok"
    assert fit("NUMBER", "FLOAT") == "widen"
    assert fit("NUMBER", "VARCHAR") == "widen"
    assert fit("BOOLEAN", "NUMBER") == "widen"
    assert fit("TIMESTAMP_TZ", "VARCHAR") == "widen"
    assert fit("VARIANT", "NUMBER") == "ok"
    assert fit("OTHER", "VARCHAR") == "misfit"  # a DATE column someone else made
    assert fit("NUMBER", "VARIANT") == "misfit"  # objects keep going to _unmapped
    assert unify("NUMBER", "FLOAT") == "FLOAT"
    assert unify("BOOLEAN", "VARCHAR") == "VARCHAR"
    assert column_type_from_warehouse("TEXT", None) == "VARCHAR"
    assert column_type_from_warehouse("NUMBER", 0) == "NUMBER"
    assert column_type_from_warehouse("NUMBER", 2) == "FLOAT"
    assert column_type_from_warehouse("DATE", None) == "OTHER"


def test_new_table_takes_the_types_of_the_whole_batch() -> None:
    p = plan([row(qty=1), row(qty=2.5, coupon=None), row(flag=True, flag2=1)], known={})
    cols = p.create_tables[("web", "order_completed")]
    assert cols["qty"] == "FLOAT"
    assert cols["flag"] == "BOOLEAN"
    assert "coupon" not in cols  # nulls make no column
    assert set(fixed_columns("order_completed")) <= set(cols)
    assert not p.misfits


def test_existing_table_adds_widens_and_moves_misfits() -> None:
    known = {
        ("web", "order_completed"): {
            **fixed_columns("order_completed"),
            "qty": "NUMBER",
            "paid": "BOOLEAN",
            "day": "OTHER",
        }
    }
    rows = [
        row(mid="m1", qty=2.5, paid="yes", note="hi", day="monday"),
        row(mid="m2", paid=False),
    ]
    p = plan(rows, known)
    key = ("web", "order_completed")
    assert p.add_columns == {key: {"note": "VARCHAR"}}
    assert p.widen_columns == {
        key: {
            "qty": Widening("NUMBER", "FLOAT", "FLOAT", 1, "m1"),
            "paid": Widening("BOOLEAN", "VARCHAR", "VARCHAR", 1, "m1"),
        }
    }
    assert p.columns[key]["qty"] == "FLOAT" and p.columns[key]["paid"] == "VARCHAR"
    assert [
        (m.column, m.change, m.column_type, m.value_type, m.occurrences, m.example_message_id)
        for m in p.misfits
    ] == [("day", "misfit", "OTHER", "VARCHAR", 1, "m1")]
    moved = p.rows[0]
    assert moved.values["paid"] == "yes" and moved.values["qty"] == 2.5
    assert "day" not in moved.values and moved.unmapped == {"day": "monday"}
    assert rows[0].values["day"] == "monday"  # the input rows are not changed
    assert p.rows[1] is rows[1]
    changes = {(c.column, c.change) for c in p.ddl_changes()}
    assert changes == {("note", "column_added")}  # widenings are recorded where they run


def test_the_ladder_climbs_to_the_first_type_holding_every_value_of_the_flush() -> None:
    assert LADDER == {
        "NUMBER": "FLOAT",
        "FLOAT": "VARCHAR",
        "BOOLEAN": "VARCHAR",
        "TIMESTAMP_TZ": "VARCHAR",
    }
    assert widen_target("NUMBER", "FLOAT") == "FLOAT"
    assert widen_target("NUMBER", "VARCHAR") == "VARCHAR"  # past FLOAT in one widening
    assert widen_target("NUMBER", "BOOLEAN") == "VARCHAR"
    assert widen_target("FLOAT", "TIMESTAMP_TZ") == "VARCHAR"
    assert widen_target("FLOAT", "NUMBER") is None  # fits already
    assert widen_target("VARIANT", "NUMBER") is None and widen_target("OTHER", "NUMBER") is None
    assert on_ladder("NUMBER", "VARCHAR") and on_ladder("BOOLEAN", "VARCHAR")
    assert not on_ladder("VARCHAR", "FLOAT") and not on_ladder("BOOLEAN", "FLOAT")
    assert not on_ladder("NUMBER", "NUMBER")

    known = {("web", "t"): {**fixed_columns("t"), "n": "NUMBER", "f": "FLOAT"}}
    rows = [
        row(table="t", mid="m1", n=1, f=1.5),
        row(table="t", mid="m2", n=1.5, f=float("nan")),
        row(table="t", mid="m3", n="abc"),
        row(table="t", mid="m4", n=2.5),
        row(table="t", mid="m5", n=3),
    ]
    p = plan(rows, known)
    # 1.5, "abc" and 2.5 need more than NUMBER; the column goes to VARCHAR in one widening
    assert p.widen_columns == {("web", "t"): {"n": Widening("NUMBER", "VARCHAR", "FLOAT", 3, "m2")}}
    assert [r.values.get("n") for r in p.rows] == [1, 1.5, "abc", 2.5, 3]
    # a non-finite float is no reason to widen: it stays a misfit
    assert [(m.column, m.value_type) for m in p.misfits] == [("f", "VARCHAR")]
    assert p.rows[1].unmapped == {"f": rows[1].values["f"]}


def test_a_widened_column_takes_every_later_scalar_and_objects_stay_unmapped() -> None:
    known = {("web", "t"): {**fixed_columns("t"), "s": "VARCHAR", "b": "BOOLEAN"}}
    rows = [row(table="t", s=1, b={"x": 1}), row(table="t", mid="m2", s=True, b=[1])]
    p = plan(rows, known)
    assert not p.widen_columns
    assert [r.values.get("s") for r in p.rows] == [1, True]
    assert [r.unmapped for r in p.rows] == [{"b": {"x": 1}}, {"b": [1]}]


def test_column_limit_sends_new_properties_to_unmapped() -> None:
    known = {("web", "t"): dict(fixed_columns("t"))}
    limit = len(known[("web", "t")]) + 1
    p = plan([row(table="t", a=1, b=2)], known, max_columns=limit)
    assert p.add_columns == {("web", "t"): {"a": "NUMBER"}}
    assert p.rows[0].unmapped == {"b": 2}
    assert p.misfits[0].change == "column_limit"


def test_nothing_to_do_for_a_known_layout() -> None:
    known = {("web", "t"): {**fixed_columns("t"), "a": "NUMBER"}}
    p = plan([row(table="t", a=1)], known)
    assert not p.has_ddl and not p.misfits


def test_the_quick_fit_check_never_disagrees_with_typing_the_value() -> None:
    from sinks.snowflake.evolution import fits_as_is

    values: list[Any] = [
        "x",
        "2026-01-05T12:00:00Z",
        0,
        -(10**37),
        10**38,
        1.5,
        float("nan"),
        float("inf"),
        True,
        False,
        datetime(2026, 1, 1, tzinfo=UTC),
        {"a": 1},
    ]
    for column_type in ("VARCHAR", "NUMBER", "FLOAT", "BOOLEAN", "TIMESTAMP_TZ", "VARIANT"):
        for value in values:
            if fits_as_is(column_type, value):  # True is a promise; False only means "type it"
                assert fit(column_type, str(value_type(value))) == "ok", (column_type, value)


def test_the_column_wise_steady_state_check_plans_exactly_what_the_per_value_path_plans(
    monkeypatch: Any,
) -> None:
    """Tables whose columns all fit are passed through without typing each value; random
    batches over every kind of value must be planned the same with and without that shortcut."""
    import random

    from sinks.snowflake import evolution

    pool: list[Any] = [
        None,
        "x",
        "2026-01-05T12:00:00Z",
        0,
        7,
        -(10**37),
        10**38,
        -(10**38),
        1.5,
        1e308,
        float("nan"),
        float("inf"),
        True,
        datetime(2026, 1, 1, tzinfo=UTC),
        {"a": 1},
    ]
    types = ["VARCHAR", "NUMBER", "FLOAT", "BOOLEAN", "TIMESTAMP_TZ", "VARIANT"]
    rnd = random.Random(5)
    for _ in range(400):
        known = {
            ("web", t): {**fixed_columns(t), **{c: rnd.choice(types) for c in "abc"}}
            for t in ("t1", "t2")
        }
        if rnd.random() < 0.2:
            del known[("web", "t2")]["c"]  # a column some rows need added
        batch = [
            row(
                table=rnd.choice(["t1", "t2"]),
                mid=f"m{i}",
                **{c: rnd.choice(pool[:1] * 6 + pool) for c in "abc" if rnd.random() < 0.9},
            )
            for i in range(rnd.randrange(1, 6))
        ]
        fast = plan(batch, known)
        with monkeypatch.context() as m:
            m.setattr(evolution, "_tables_as_is", lambda rows, known: set())
            slow = plan(batch, known)
        assert fast == slow, (known, batch)
    big = [row(table="t1", mid=f"m{i}", a=i, b=float(i), c="v") for i in range(50)]
    known = {("web", "t1"): {**fixed_columns("t1"), "a": "NUMBER", "b": "FLOAT", "c": "VARCHAR"}}
    assert evolution._tables_as_is(big, known) == {("web", "t1")}
    assert plan(big, known).rows == big


def test_pre_flight_keeps_values_snowflake_refuses_out_of_typed_columns() -> None:
    # an offset that moves year 1 or 9999 out of range in UTC: text, not a timestamp (it
    # crashed typing before, OverflowError)
    assert value_type("0001-01-01T00:30:00+01:00") == "VARCHAR"
    assert value_type("9999-12-31T23:30:00-05:00") == "VARCHAR"
    assert value_type("9999-12-31T23:30:00Z") == "TIMESTAMP_TZ"
    assert value_type(float("nan")) == "VARCHAR" and value_type(float("inf")) == "VARCHAR"
    assert value_type(10**38) == "FLOAT"
    known = {("web", "order_completed"): {**fixed_columns("order_completed"), "at": "TIMESTAMP_TZ"}}
    p = plan([row(at="9999-12-31T23:30:00-05:00", amount=float("nan"))], known)
    (out,) = p.rows
    # such a string is text: the timestamp column widens to VARCHAR and keeps it as sent
    assert out.values["at"] == "9999-12-31T23:30:00-05:00" and not out.unmapped
    assert p.widen_columns[("web", "order_completed")]["at"].target == "VARCHAR"
    known[("web", "order_completed")]["n"] = "FLOAT"
    (out,) = plan([row(n=float("inf"))], known).rows
    assert out.unmapped == {"n": float("inf")} and "n" not in out.values


def test_a_schema_change_becomes_a_row_of_the_changes_table() -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    change = SchemaChange("web", "t", "qty", "misfit", "NUMBER", "VARCHAR", 3, "m7")
    out = change.row(at)
    assert (out.schema, out.table, out.kind, out.message_id) == (
        "web",
        "_segflow_schema_changes",
        Kind.APPEND,
        "m7",
    )
    assert out.values.keys() <= fixed_columns("_segflow_schema_changes").keys()
    assert {k: out.values[k] for k in ("table_name", "column_name", "change", "occurrences")} == {
        "table_name": "t",
        "column_name": "qty",
        "change": "misfit",
        "occurrences": 3,
    }
    assert out.values["detected_by"] == "sink" and out.values["detected_at"] == at
    assert change.row(at).values["id"] != out.values["id"]


def test_timestamp_strings_fit_a_timestamp_column_without_typing_each_value() -> None:
    from sinks.snowflake import evolution

    known = {("web", "t1"): {**fixed_columns("t1"), "a": "TIMESTAMP_TZ"}}
    good = [row(table="t1", mid=f"m{i}", a=f"2026-01-0{i % 9 + 1}T12:00:00Z") for i in range(20)]
    assert evolution._tables_as_is(good, known) == {("web", "t1")}
    assert plan(good, known).rows == good
    for odd in ("not a time", "0001-01-01T00:30:00+01:00"):  # text, or out of range in UTC
        batch = [*good, row(table="t1", mid="odd", a=odd)]
        assert evolution._tables_as_is(batch, known) == set()
        p = plan(batch, known)
        assert p.widen_columns[("web", "t1")]["a"].target == "VARCHAR"
