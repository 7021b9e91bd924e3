"""The strict check refuses what Snowflake refuses, with Snowflake's codes, and lets the rest by."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr
from snowflake.connector.connection import SnowflakeConnection
from snowflake.connector.cursor import SnowflakeCursor
from snowflake.connector.errors import ProgrammingError

from runtime.settings import WarehouseSettings
from schemas.errors import FatalError
from schemas.snowflake_limits import MAX_COLUMNS_PER_TABLE, MAX_VARCHAR_BYTES
from sinks.snowflake import strict
from sinks.snowflake.ddl import add_column, create_table, put_file
from sinks.snowflake.errors import WarehouseMisfitError, classify
from sinks.snowflake.session import login


def _conn() -> tuple[Any, Any]:
    conn = MagicMock(spec_set=SnowflakeConnection)
    cur = MagicMock(spec_set=SnowflakeCursor)
    conn.cursor.return_value = cur
    return conn, cur


def test_identifiers_over_255_characters_are_refused_outside_string_literals() -> None:
    strict.check_text(create_table("web", "t" * 255, {"c" * 255: "VARCHAR"}))
    strict.check_text(f'PUT \'file:///tmp/{"x" * 400}.parquet\' @"S"."T"/a/')
    with pytest.raises(strict.StrictViolation) as caught:
        strict.check_text(create_table("web", "t", {"c" * 256: "VARCHAR"}))
    assert caught.value.rule == "identifier_length"
    with pytest.raises(strict.StrictViolation):
        strict.check_text(f"SELECT {'u' * 256} FROM t")
    # a doubled quote is one character of the name
    strict.check_text('SELECT "' + 'a""' * 127 + '" FROM t')


def test_create_table_column_count_and_statement_size() -> None:
    cols = {f"c{i}": "NUMBER" for i in range(MAX_COLUMNS_PER_TABLE)}
    strict.check_text(create_table("web", "t", cols))  # NUMBER(38,0)'s comma is not a column
    cols["one_more"] = "VARCHAR"
    with pytest.raises(strict.StrictViolation) as caught:
        strict.check_text(create_table("web", "t", cols))
    assert caught.value.rule == "columns_per_table"
    with pytest.raises(strict.StrictViolation) as caught:
        strict.check_text("SELECT '" + "x" * 1_100_000 + "'")
    assert caught.value.rule == "statement_size"


def test_bound_values_sizes_and_digits() -> None:
    strict.check_binds(["a", 10**38 - 1, -(10**38) + 1, 1.5, None, datetime.now(UTC)])
    with pytest.raises(strict.StrictViolation) as caught:
        strict.check_binds([10**38])
    assert (caught.value.errno, caught.value.sqlstate) == (100046, "22003")
    with pytest.raises(strict.StrictViolation) as caught:
        strict.check_binds(["é" * (MAX_VARCHAR_BYTES // 2 + 1)])  # 2 bytes a character
    assert (caught.value.errno, caught.value.sqlstate) == (100082, "22000")


def test_parquet_of_a_put_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(
        pa.table(
            {
                "S": pa.array(["x", None]),
                "N": pa.array([10**37, None], pa.decimal128(38, 0)),
                "T": pa.array([datetime(1, 1, 1, tzinfo=UTC), None], pa.timestamp("us", "UTC")),
            }
        ),
        good,
    )
    strict.check_parquet(str(good))
    late = tmp_path / "late.parquet"
    year_10000_us = 253_402_300_800 * 1_000_000
    pq.write_table(pa.table({"T": pa.array([year_10000_us], pa.timestamp("us", "UTC"))}), late)
    with pytest.raises(strict.StrictViolation) as caught:
        strict.check_parquet(str(late))
    assert (caught.value.errno, caught.value.sqlstate) == (100035, "22007")
    wide = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"N": pa.array([1], pa.decimal256(40, 0))}), wide)
    with pytest.raises(strict.StrictViolation) as caught:
        strict.check_parquet(str(wide))
    assert caught.value.errno == 100046


def test_large_staged_string_is_refused_like_snowflake(tmp_path: Path) -> None:
    conn, cur = _conn()
    seen: list[str] = []
    checked = strict.wrap(conn, "sink", seen.append)
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"S": pa.array(["x" * (MAX_VARCHAR_BYTES + 1)])}), path)
    with pytest.raises(ProgrammingError) as caught:
        checked.cursor().execute(put_file(str(path), "_segflow", "_segflow_stage", "f"))
    assert (caught.value.errno, caught.value.sqlstate) == (100082, "22000")
    assert seen == ["varchar_size"]
    cur.execute.assert_not_called()  # the warehouse never saw it
    # the sink's classifier makes it a misfit, as Snowflake's own answer would be
    assert isinstance(classify(caught.value, statement="put"), WarehouseMisfitError)


def test_add_column_counts_the_tables_columns_first() -> None:
    conn, cur = _conn()
    checked = strict.wrap(conn, "sink")
    cur.fetchall.return_value = [(f"C{i}",) for i in range(MAX_COLUMNS_PER_TABLE - 1)]
    checked.cursor().execute(add_column("web", "t", "new", "VARCHAR"))
    assert cur.execute.call_args.args[0].startswith("ALTER TABLE")
    cur.fetchall.return_value = [(f"C{i}",) for i in range(MAX_COLUMNS_PER_TABLE)]
    with pytest.raises(ProgrammingError):
        checked.cursor().execute(add_column("web", "t", "new", "VARCHAR"))
    # a column that is there already adds nothing (IF NOT EXISTS)
    checked.cursor().execute(add_column("web", "t", "c5", "VARCHAR"))


def test_a_statement_that_fits_reaches_the_warehouse_with_its_binds() -> None:
    conn, cur = _conn()
    checked = strict.wrap(conn, "sink")
    out = checked.cursor().execute("SELECT ?", ["a"])
    cur.execute.assert_called_once_with("SELECT ?", ["a"])
    assert out is not None
    assert strict.wrap(checked, "sink") is checked


def test_login_checks_the_emulator_by_default_and_a_real_account_only_if_asked() -> None:
    conn, _ = _conn()
    emulator = WarehouseSettings()
    checked, _db = login(emulator, "forget", lambda **_: conn)
    assert isinstance(checked, strict.StrictConnection)
    real = WarehouseSettings(account="xy12345", password=SecretStr("p"))
    plain, _db = login(real, "forget", lambda **_: conn)
    assert plain is conn
    asked, _db = login(real.model_copy(update={"strict": True}), "forget", lambda **_: conn)
    assert isinstance(asked, strict.StrictConnection)
    off, _db = login(emulator.model_copy(update={"strict": False}), "forget", lambda **_: conn)
    assert off is conn


def test_an_identifier_violation_is_fatal_not_a_misfit() -> None:
    conn, _ = _conn()
    checked = strict.wrap(conn, "sink")
    with pytest.raises(ProgrammingError) as caught:
        checked.cursor().execute(create_table("web", "t", {"c" * 300: "VARCHAR"}))
    assert isinstance(classify(caught.value, statement="ddl"), FatalError)
