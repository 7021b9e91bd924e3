"""The emulator's multi-table INSERT (runtime/services/emulator_server.py), which DuckDB lacks,
through the real connector: Snowflake's semantics as its documentation gives them ("INSERT
(multi-table)") and its answer, so the sink's one-statement load is tested as Snowflake runs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import snowflake.connector
from snowflake.connector.errors import ProgrammingError

from tests.integration.conftest import unique_name

pytestmark = pytest.mark.integration


@pytest.fixture
def cur(warehouse_conn_params: dict[str, Any]) -> Iterator[Any]:
    schema = unique_name("multitable").upper()
    with (
        snowflake.connector.connect(
            **warehouse_conn_params, database="SEGFLOW_TEST", schema=schema, paramstyle="qmark"
        ) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        cursor.execute(f'USE SCHEMA "{schema}"')
        cursor.execute("CREATE TABLE src (id VARCHAR, kind VARCHAR, n VARCHAR, doc VARCHAR)")
        cursor.execute(
            "INSERT INTO src VALUES ('a', 'x', '1', '{\"k\": 1}'), ('b', 'y', '2', NULL), "
            "('c', 'x', 'three', '[1]'), ('d', 'z', '4', NULL)"
        )
        cursor.execute("CREATE TABLE x (id VARCHAR, n NUMBER, doc VARIANT, loaded TIMESTAMP_TZ)")
        cursor.execute("CREATE TABLE y (id VARCHAR, n NUMBER)")
        cursor.execute("CREATE TABLE other (id VARCHAR)")
        yield cursor


def _rows(cur: Any, table: str) -> list[tuple[Any, ...]]:
    return sorted(cur.execute(f"SELECT * FROM {table}").fetchall())


def test_insert_all_runs_every_true_when_and_answers_a_count_per_table(cur: Any) -> None:
    cur.execute(
        "INSERT ALL "
        "WHEN kind = 'x' THEN INTO x (id, n, doc, loaded) VALUES (id, num, js, loaded) "
        "WHEN kind IN ('x', 'y') AND num IS NOT NULL THEN INTO y (id, n) VALUES (id, num) "
        "WHEN kind = 'y' THEN INTO other (id) VALUES (id) INTO other (id) VALUES (kind) "
        "SELECT id, kind, TRY_TO_NUMBER(n) AS num, PARSE_JSON(doc) AS js, "
        "CAST(? AS TIMESTAMP_TZ) AS loaded FROM src WHERE id <> ?",
        ["2026-01-05T12:00:00+00:00", "d"],
    )
    assert [d.name for d in cur.description] == [
        "number of rows inserted into X",
        "number of rows inserted into Y",
        "number of rows inserted into OTHER",
    ]
    assert cur.fetchall() == [(2, 2, 2)]
    assert cur.rowcount == 6  # the connector's sum, as for Snowflake's answer
    x = _rows(cur, "x")
    assert [(r[0], r[1]) for r in x] == [("a", 1), ("c", None)]
    assert x[0][2] is not None and x[0][3] is not None
    assert _rows(cur, "y") == [("a", 1), ("b", 2)]
    assert _rows(cur, "other") == [("b",), ("y",)]


def test_insert_first_takes_the_first_true_when_and_else_the_rest(cur: Any) -> None:
    cur.execute(
        "INSERT FIRST "
        "WHEN kind = 'x' THEN INTO other (id) VALUES (id) "
        "WHEN kind IN ('x', 'y') THEN INTO y (id) VALUES (id) "
        "ELSE INTO x (id) VALUES (id) INTO other (id) VALUES (kind) "
        "SELECT * FROM src"
    )
    assert cur.fetchall() == [(3, 1, 1)]  # other: 2 by the first WHEN, 1 by ELSE
    assert _rows(cur, "other") == [("a",), ("c",), ("z",)]
    assert [r[0] for r in _rows(cur, "y")] == ["b"]
    assert [r[0] for r in _rows(cur, "x")] == ["d"]


def test_the_subquery_is_read_once_before_any_row_goes_in(cur: Any) -> None:
    """A subquery reading a target sees it as it was before the statement."""
    cur.execute(
        "INSERT ALL INTO other (id) VALUES (id) INTO other (id) VALUES (id) "
        "SELECT id FROM src WHERE id NOT IN (SELECT id FROM other)"
    )
    assert cur.fetchall() == [(8,)]


def test_a_multi_table_insert_rolls_back_with_its_transaction(cur: Any) -> None:
    cur.execute("BEGIN")
    cur.execute("INSERT ALL INTO other (id) VALUES (id) INTO y (id) VALUES (id) SELECT * FROM src")
    cur.execute("ROLLBACK")
    assert _rows(cur, "other") == [] and _rows(cur, "y") == []


def test_values_other_than_source_columns_are_refused_as_snowflake_does(cur: Any) -> None:
    with pytest.raises(ProgrammingError) as refused:
        cur.execute("INSERT ALL INTO other (id) VALUES (UPPER(id)) SELECT * FROM src")
    assert refused.value.errno == 1003 and refused.value.sqlstate == "42000"
    assert _rows(cur, "other") == []


def test_a_value_a_column_cannot_take_fails_the_whole_statement(cur: Any) -> None:
    """'three' into a NUMBER column: the statement fails with the emulator's conversion error
    and inserts nothing, into any table."""
    cur.execute("BEGIN")
    with pytest.raises(ProgrammingError) as refused:
        cur.execute(
            "INSERT ALL INTO other (id) VALUES (id) INTO y (id, n) VALUES (id, n) SELECT * FROM src"
        )
    assert refused.value.errno == 100035
    cur.execute("ROLLBACK")
    assert _rows(cur, "other") == [] and _rows(cur, "y") == []


def test_else_with_all_and_into_clauses_without_values_or_columns(cur: Any) -> None:
    """ELSE under ALL takes the rows no WHEN took; an INTO without VALUES takes the subquery's
    columns in order, one without a column list fills the table's columns in order."""
    cur.execute(
        "INSERT ALL WHEN id IN ('a', 'c') THEN INTO other VALUES (id) "
        "ELSE INTO y (id, n) SELECT id, TRY_TO_NUMBER(n) AS n FROM src"
    )
    assert cur.fetchall() == [(2, 2)]
    assert _rows(cur, "other") == [("a",), ("c",)]
    assert _rows(cur, "y") == [("b", 2), ("d", 4)]


def test_what_the_emulator_cannot_run_faithfully_is_refused(cur: Any) -> None:
    for sql, binds in (
        ("INSERT ALL WHEN id = ? THEN INTO other (id) VALUES (id) SELECT * FROM src", ["a"]),
        ("INSERT OVERWRITE ALL INTO other (id) VALUES (id) SELECT * FROM src", None),
        ("INSERT FIRST INTO other (id) VALUES (id) SELECT * FROM src", None),
        ("INSERT ALL INTO y (id, n) VALUES (id) SELECT * FROM src", None),
    ):
        with pytest.raises(ProgrammingError, match="SQL compilation error") as refused:
            cur.execute(sql, binds)
        assert refused.value.errno == 1003, sql
    assert _rows(cur, "other") == [] and _rows(cur, "y") == []


def test_outside_a_transaction_the_statement_is_still_all_or_nothing(cur: Any) -> None:
    with pytest.raises(ProgrammingError):
        cur.execute(
            "INSERT ALL INTO other (id) VALUES (id) INTO y (id, n) VALUES (id, n) SELECT * FROM src"
        )
    assert _rows(cur, "other") == [] and _rows(cur, "y") == []
    cur.execute(  # comments, a semicolon and a SELECT inside a literal do not mislead it
        "INSERT ALL /* ( SELECT */ WHEN kind = ') select' OR id = 'a' THEN "
        "INTO other (id) VALUES (id) -- with ( \n SELECT * FROM src;"
    )
    assert cur.fetchall() == [(1,)]
