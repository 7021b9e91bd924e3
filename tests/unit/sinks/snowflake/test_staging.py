from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from sinks.snowflake.rows import JsonText, TableRow
from sinks.snowflake.staging import group_rows, staged_columns, to_text, write_parquet
from sinks.snowflake.tables import Kind

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_to_text() -> None:
    assert to_text(True) == "true"
    assert to_text(3) == "3"
    assert to_text(T0) == "2026-01-05T12:00:00+00:00"
    assert to_text({"a": 1}) == '{"a":1}'


def test_one_file_for_all_tables_with_disagreeing_columns_as_text(tmp_path: Path) -> None:
    a = TableRow("web", "a", Kind.APPEND, {"id": "1", "received_at": T0, "x": 1.5}, {"z": 1}, "1")
    b = TableRow(
        "web",
        "b",
        Kind.APPEND,
        {"id": "2", "received_at": "2026-01-05T12:00:01Z", "x": True, "p": JsonText('{"k":1}')},
        None,
        "2",
    )
    columns = {
        ("web", "a"): {
            "id": "VARCHAR",
            "received_at": "TIMESTAMP_TZ",
            "x": "FLOAT",
            "_unmapped": "VARIANT",
            "uuid_ts": "TIMESTAMP_TZ",
        },
        ("web", "b"): {
            "id": "VARCHAR",
            "received_at": "TIMESTAMP_TZ",
            "x": "BOOLEAN",
            "p": "VARIANT",
        },
    }
    groups = group_rows([a, b])
    staged = staged_columns(groups.keys(), columns)
    assert staged["x"] == "VARCHAR" and staged["received_at"] == "TIMESTAMP_TZ"
    assert "uuid_ts" not in staged  # set by the load, not staged
    path = tmp_path / "f.parquet"
    assert write_parquet(path, groups, columns, staged) == 2
    table = pq.read_table(path).to_pylist()
    assert table[0]["_SEGFLOW_TABLE"] == "a" and table[0]["X"] == "1.5"
    assert table[0]["_UNMAPPED"] == '{"z":1}'
    assert table[1]["X"] == "true" and table[1]["P"] == '{"k":1}'
    assert table[1]["RECEIVED_AT"] == datetime(2026, 1, 5, 12, 0, 1, tzinfo=UTC)


def test_typed_columns_numbers_as_decimals_and_values_that_need_converting(
    tmp_path: Path,
) -> None:
    """Rows of one table whose values are all of their staged types take pyarrow's typed path;
    a column with values to convert (a timestamp as text, a string in a VARIANT column) is
    converted value by value, with the same result."""
    cols = {
        "id": "VARCHAR",
        "received_at": "TIMESTAMP_TZ",
        "qty": "NUMBER",
        "price": "FLOAT",
        "ok": "BOOLEAN",
        "doc": "VARIANT",
        "_unmapped": "VARIANT",
    }
    rows = [
        TableRow(
            "web",
            "t",
            Kind.APPEND,
            {"id": "1", "received_at": T0, "qty": 10**20, "price": 2, "ok": True, "doc": "s"},
            None,
            "1",
        ),
        TableRow(
            "web",
            "t",
            Kind.APPEND,
            {
                "id": "2",
                "received_at": "2026-01-05T12:00:01Z",
                "qty": None,
                "doc": JsonText('{"k":[1]}'),
            },
            {"late": 1},
            "2",
        ),
    ]
    groups = group_rows(rows)
    staged = staged_columns(groups.keys(), {("web", "t"): cols})
    assert staged["qty"] == "NUMBER"
    path = tmp_path / "f.parquet"
    assert write_parquet(path, groups, {("web", "t"): cols}, staged) == 2
    table = pq.read_table(path)
    assert str(table.schema.field("QTY").type) == "decimal128(38, 0)"
    first, second = table.to_pylist()
    assert int(first["QTY"]) == 10**20 and first["PRICE"] == 2.0 and first["OK"] is True
    assert first["DOC"] == '"s"'  # a JSON string: PARSE_JSON gives the text back
    assert second["DOC"] == '{"k":[1]}' and second["_UNMAPPED"] == '{"late":1}'
    assert second["RECEIVED_AT"] == datetime(2026, 1, 5, 12, 0, 1, tzinfo=UTC)
