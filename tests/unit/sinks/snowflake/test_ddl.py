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
    assert ddl.retired_name("qty") == "qty" + ddl.RETIRED_SUFFIX
    assert ddl.widened_column("qty" + ddl.WIDEN_SUFFIX, []) == "qty"
    assert ddl.widened_column("qty" + ddl.RETIRED_SUFFIX, []) == "qty"
    assert ddl.widened_column("qty", ["qty"]) is None  # not a twin


@pytest.mark.parametrize("length", [237, 238, 254, 255])
def test_the_twin_of_a_long_column_fits_and_differs(length: int) -> None:
    column = "c" * (length - 1) + "x"
    twin = ddl.twin_name(column)
    assert twin != column and len(twin) <= MAX_IDENTIFIER_LENGTH
    assert twin.endswith(ddl.WIDEN_SUFFIX)  # the loader tells twins by their suffix
    assert ddl.twin_name(column) == twin  # deterministic
    assert ddl.twin_name("c" * length) != twin  # a shared prefix is not a shared twin
    retired = ddl.retired_name(column)
    assert retired not in (twin, column) and len(retired) == len(twin)
    for sql in ddl.widen_steps("web", "t", column, "BOOLEAN", "VARCHAR"):
        assert all(len(name) <= MAX_IDENTIFIER_LENGTH for name in identifiers(sql)), sql
    steps = ddl.widen_steps("web", "t", column)
    assert f'RENAME COLUMN "{twin.upper()}" TO "{column.upper()}"' in steps[ddl.SWAP]
    # a twin or retired column found in a table leads back to its column
    assert ddl.widened_column(twin, [column, twin, "other"]) == column
    assert ddl.widened_column(retired, [column, retired, "other"]) == column


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


def test_a_widening_copies_sets_aside_renames_catches_up_and_drops() -> None:
    t, q, twin, old = '"WEB"."T"', '"QTY"', '"QTY__SEGFLOW_WIDENED"', '"QTY__SEGFLOW_RETIRED"'
    assert ddl.widen_steps("web", "t", "qty", "NUMBER", "VARCHAR") == [
        f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {twin} VARCHAR",
        f"UPDATE {t} SET {twin} = {q}::VARCHAR WHERE {twin} IS NULL AND {q} IS NOT NULL",
        f"ALTER TABLE {t} RENAME COLUMN {q} TO {old}",
        f"ALTER TABLE {t} RENAME COLUMN {twin} TO {q}",
        f"UPDATE {t} SET {q} = {old}::VARCHAR WHERE {q} IS NULL AND {old} IS NOT NULL",
        f"ALTER TABLE {t} DROP COLUMN IF EXISTS {old}",
    ]
    # the old column is dropped last, after its values were copied twice over (before the
    # renames, and what a writer put in it since): nothing written to it is lost
    steps = ddl.widen_steps("web", "t", "qty")
    assert steps.index(next(s for s in steps if "DROP" in s)) == len(steps) - 1


@pytest.mark.parametrize(
    ("source", "target", "cast"),
    [
        ("NUMBER", "FLOAT", "x::FLOAT"),
        ("NUMBER", "VARCHAR", "x::VARCHAR"),
        ("FLOAT", "VARCHAR", "x::VARCHAR"),
        ("BOOLEAN", "VARCHAR", "IFF(x, 'true', 'false')"),
        (
            "TIMESTAMP_TZ",
            "VARCHAR",
            "TO_VARCHAR(CONVERT_TIMEZONE('UTC', x), 'YYYY-MM-DD\"T\"HH24:MI:SS.FF3') || 'Z'",
        ),
        ("VARCHAR", "VARCHAR", "x"),  # a widening done already: the copy changes nothing
    ],
)
def test_every_step_of_the_ladder_has_its_cast(source: str, target: str, cast: str) -> None:
    assert ddl.widen_cast(source, target, "x") == cast


def test_the_ladder_and_its_casts_agree() -> None:
    from sinks.snowflake.evolution import LADDER, on_ladder

    pairs = {(s, t) for s in LADDER for t in set(LADDER.values()) if on_ladder(s, t)}
    assert pairs == set(ddl.WIDEN_CASTS)
