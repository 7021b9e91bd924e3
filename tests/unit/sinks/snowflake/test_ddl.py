"""ddl.py: the names its statements carry fit Snowflake (widening twins, staging tables)."""

from __future__ import annotations

import re

import pytest

from schemas.naming import fit_identifier
from schemas.snowflake_limits import MAX_IDENTIFIER_LENGTH
from sinks.snowflake import ddl

_QUOTED = re.compile(r'"((?:[^"]|"")*)"')


def identifiers(sql: str) -> list[str]:
    """Every quoted identifier of a statement, unescaped."""
    return [m.replace('""', '"') for m in _QUOTED.findall(sql)]


def test_a_short_column_s_twin_is_the_column_and_the_suffix() -> None:
    assert ddl.twin_name("qty") == "qty" + ddl.WIDEN_SUFFIX
    assert ddl.widened_column("qty" + ddl.WIDEN_SUFFIX, []) == "qty"
    assert ddl.widened_column("qty", ["qty"]) is None  # not a twin


@pytest.mark.parametrize("length", [237, 238, 254, 255])
def test_the_twin_of_a_long_column_fits_and_differs(length: int) -> None:
    column = "c" * (length - 1) + "x"
    twin = ddl.twin_name(column)
    assert twin != column and len(twin) <= MAX_IDENTIFIER_LENGTH
    assert twin.endswith(ddl.WIDEN_SUFFIX)  # the loader tells twins by their suffix
    assert ddl.twin_name(column) == twin  # deterministic
    assert ddl.twin_name("c" * length) != twin  # a shared prefix is not a shared twin
    for sql in ddl.widen_steps("web", "t", column):
        assert all(len(name) <= MAX_IDENTIFIER_LENGTH for name in identifiers(sql)), sql
    steps = ddl.widen_steps("web", "t", column)
    assert f'RENAME COLUMN "{twin.upper()}" TO "{column.upper()}"' in steps[-1]
    # a twin found in a table leads back to its column
    assert ddl.widened_column(twin, [column, twin, "other"]) == column


def test_a_cut_twin_whose_column_is_gone_is_not_mistaken_for_another() -> None:
    column = "c" * 255
    twin = ddl.twin_name(column)
    assert len(twin) == MAX_IDENTIFIER_LENGTH
    assert ddl.widened_column(twin, [twin]) is None
    # an uncut twin never has 255 characters, so the length tells the two kinds apart
    assert len(ddl.twin_name("c" * 237)) < MAX_IDENTIFIER_LENGTH


def test_staging_tables_are_named_by_the_naming_rule() -> None:
    short = "_segflow_staging_20260101000000_abcdef12"
    assert ddl.staging_table("_segflow", short) == f"_segflow.{short}"
    long_name = "_segflow_staging_" + "x" * 300
    ref = ddl.staging_table("_segflow", long_name)
    assert ref == f"_segflow.{fit_identifier(long_name)}"
    sql = ddl.create_staging(ref, {"id": "VARCHAR"})
    assert all(len(name) <= MAX_IDENTIFIER_LENGTH for name in identifiers(sql)), sql
