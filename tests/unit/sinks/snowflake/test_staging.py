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
