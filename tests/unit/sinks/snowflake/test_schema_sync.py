"""Schema sync finishing a widening an earlier process left half done, for columns of any
length (a twin of a 255-character column is cut, so its column cannot be read off its name)."""

from __future__ import annotations

from typing import Any
from unittest.mock import create_autospec

from prometheus_client import CollectorRegistry

from sinks.snowflake import ddl
from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.schema_sync import SchemaSync


def repair(tables: dict[str, dict[str, str]]) -> list[str]:
    """The statements `repair_widenings` runs, on a spec'd fake of the connection."""
    conn: Any = create_autospec(SinkConnection, instance=True)
    SchemaSync(conn, SinkMetrics(CollectorRegistry())).repair_widenings("web", tables)
    return [c.args[0] for c in conn.run.call_args_list]


def test_a_long_column_s_interrupted_widening_is_finished_on_that_column() -> None:
    column = "c" * 255
    twin = ddl.twin_name(column)
    tables = {"t": {"id": "VARCHAR", column: "NUMBER", twin: "FLOAT"}}
    sql = repair(tables)
    assert sql == ddl.widen_steps("web", "t", column)
    assert tables["t"] == {"id": "VARCHAR", column: "FLOAT"}


def test_a_twin_left_alone_is_renamed_to_its_column() -> None:
    tables = {"t": {"qty" + ddl.WIDEN_SUFFIX: "FLOAT"}}
    assert repair(tables) == [ddl.finish_widen("web", "t", "qty")]
    assert tables["t"] == {"qty": "FLOAT"}


def test_a_cut_twin_without_its_column_is_left_as_it_is() -> None:
    """Its column's name cannot be told: renaming it to the name before the suffix (a cut,
    hashed name) would put the values under a column no event ever names."""
    twin = ddl.twin_name("c" * 255)
    tables = {"t": {"id": "VARCHAR", twin: "FLOAT"}}
    assert repair(tables) == []
    assert tables["t"] == {"id": "VARCHAR", twin: "FLOAT"}
