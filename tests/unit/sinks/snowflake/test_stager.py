"""stager.py: when the staging table takes a flush's file as it is, and what a re-created one
holds."""

from __future__ import annotations

from schemas.snowflake_limits import MAX_COLUMNS_PER_TABLE
from sinks.snowflake.stager import holds, widened


def test_a_table_holds_a_file_whose_every_column_it_has_with_the_same_type() -> None:
    table = {"id": "VARCHAR", "qty": "NUMBER", "plan": "VARCHAR"}
    assert holds(table, {"id": "VARCHAR", "qty": "NUMBER"})  # fewer columns: NULL in the rest
    assert holds(table, dict(table))
    assert not holds(table, {"id": "VARCHAR", "coupon": "VARCHAR"})  # a column it lacks
    assert not holds(table, {"id": "VARCHAR", "qty": "VARCHAR"})  # staged as text now
    assert not holds(None, {"id": "VARCHAR"})  # not known (a new session): made again


def test_a_re_created_table_keeps_the_old_columns_the_file_does_not_retype() -> None:
    old = {"id": "VARCHAR", "qty": "NUMBER", "plan": "VARCHAR"}
    new = widened(old, {"id": "VARCHAR", "qty": "VARCHAR", "coupon": "VARCHAR"})
    assert new == {"id": "VARCHAR", "qty": "VARCHAR", "coupon": "VARCHAR", "plan": "VARCHAR"}
    assert holds(new, {"id": "VARCHAR", "qty": "VARCHAR", "coupon": "VARCHAR"})
    assert holds(new, {"id": "VARCHAR", "plan": "VARCHAR"})
    assert widened(None, {"id": "VARCHAR"}) == {"id": "VARCHAR"}


def test_the_kept_columns_stop_at_snowflakes_column_limit() -> None:
    old = {f"c{i}": "VARCHAR" for i in range(MAX_COLUMNS_PER_TABLE)}
    staged = {"id": "VARCHAR", "c1": "NUMBER"}
    new = widened(old, staged)
    assert len(new) == MAX_COLUMNS_PER_TABLE
    assert new["id"] == "VARCHAR" and new["c1"] == "NUMBER"  # the file's own columns first
