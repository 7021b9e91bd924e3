"""Type widening along the ladder (integer -> float -> string; boolean and timestamp -> string),
loaded through the real loader into the emulator with Snowflake's limits checked: a property
that met an integer, then a float, then a string keeps every value queryable by type, in the
column of its name; a second sink with an older layout loads beside it without losing a value;
a widening stopped between its renames is finished by the next loader."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sinks.snowflake import ddl
from tests.integration.sink_support import TrackLoads

pytestmark = pytest.mark.integration


class Loads(TrackLoads):
    """One database; loaders of one group flushing track events ("Widen") into partition 0."""

    def __init__(self) -> None:
        super().__init__("widen", "Widen")

    def values(self, ids: list[str], expr: str) -> list[Any]:
        """`expr` of each row, in the order of `ids`."""
        got = dict(
            self.wh.query(
                f'SELECT "ID", {expr} FROM "WEB"."WIDEN" WHERE "ID" IN '
                f"({', '.join('?' * len(ids))})",
                ids,
            )
        )
        return [got[i] for i in ids]

    def widenings(self) -> list[tuple[str, str, str, str, int]]:
        return sorted(
            self.wh.query(
                'SELECT "COLUMN_NAME", "PREVIOUS_TYPE", "COLUMN_TYPE", "VALUE_TYPE", "OCCURRENCES" '
                'FROM "WEB"."_SEGFLOW_SCHEMA_CHANGES" WHERE "CHANGE" = \'column_widened\''
            )
        )


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels.values()): s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == name
    }


def leftovers(columns: dict[str, str]) -> list[str]:
    return [c for c in columns if c.endswith((ddl.WIDEN_SUFFIX, ddl.RETIRED_SUFFIX))]


def test_integer_float_string_and_boolean_and_timestamp_widen_to_text(
    warehouse_conn_params: dict[str, Any],
) -> None:
    loads = Loads()
    loader, registry = loads.loader()
    ts = "2026-01-05T12:00:00.123Z"
    ids = loads.flush(loader, [{"n": 1, "b": True, "at": ts}])
    assert {k: loads.columns()[k] for k in ("n", "b", "at")} == {
        "n": "NUMBER",
        "b": "BOOLEAN",
        "at": "TIMESTAMP_TZ",
    }
    ids += loads.flush(loader, [{"n": 1.5}])  # NUMBER -> FLOAT
    assert loads.columns()["n"] == "FLOAT"
    ids += loads.flush(loader, [{"n": "abc", "b": "maybe", "at": "soon"}])  # all -> VARCHAR
    ids += loads.flush(loader, [{"n": 7, "b": False, "at": "2026-02-01T00:00:00Z"}])
    cols = loads.columns()
    assert {k: cols[k] for k in ("n", "b", "at")} == {"n": "TEXT", "b": "TEXT", "at": "TEXT"}
    assert leftovers(cols) == []

    # every value in the column of its name, as text; the numbers, booleans and timestamps
    # among them read back as such
    n = loads.values(ids, '"N"')
    assert [float(n[0]), n[1], n[2], n[3]] == [1.0, "1.5", "abc", "7"]  # 1 went by FLOAT: "1.0"
    assert loads.values(ids, 'TRY_TO_DOUBLE("N")') == [1.0, 1.5, None, 7.0]
    assert loads.values(ids, '"B"') == ["true", None, "maybe", "false"]
    assert loads.values(ids, 'TRY_TO_BOOLEAN("B")') == [True, None, None, False]
    assert loads.values(ids, '"AT"') == [ts, None, "soon", "2026-02-01T00:00:00Z"]
    stamps = loads.values(ids, 'TRY_CAST("AT" AS TIMESTAMP_TZ)')
    assert stamps[0] == datetime(2026, 1, 5, 12, 0, 0, 123000, tzinfo=UTC)
    assert stamps[3] == datetime(2026, 2, 1, tzinfo=UTC)
    assert loads.values(ids, '"_UNMAPPED"') == [None] * 4  # nothing went to _unmapped

    # recorded with both types, and counted
    assert loads.widenings() == [
        ("at", "TIMESTAMP_TZ", "VARCHAR", "VARCHAR", 1),
        ("b", "BOOLEAN", "VARCHAR", "VARCHAR", 1),
        ("n", "FLOAT", "VARCHAR", "VARCHAR", 1),
        ("n", "NUMBER", "FLOAT", "FLOAT", 1),
    ]
    assert samples(registry, "segflow_sink_columns_widened_total") == {
        ("NUMBER", "FLOAT"): 1,
        ("FLOAT", "VARCHAR"): 1,
        ("BOOLEAN", "VARCHAR"): 1,
        ("TIMESTAMP_TZ", "VARCHAR"): 1,
    }
    assert samples(registry, "segflow_sink_strict_violations_total") in ({}, {(): 0.0})
    loader.close()


def test_a_second_sink_and_a_stopped_widening_lose_no_value(
    warehouse_conn_params: dict[str, Any],
) -> None:
    loads = Loads()
    a, _ = loads.loader()
    b, b_registry = loads.loader()
    ids = loads.flush(a, [{"flag": True, "qty": 1}])
    ids += loads.flush(b, [{"flag": False, "qty": 2}])  # b has read the layout: BOOLEAN
    ids += loads.flush(a, [{"flag": "yes"}])  # a widens flag to VARCHAR
    # b, on its old layout (flag BOOLEAN), loads a boolean: the warehouse writes it as text
    ids += loads.flush(b, [{"flag": False}])
    # b sees a value that needs the widening a did: it reads the table afresh and does not
    # widen again; its boolean goes in as the text a's copy wrote
    ids += loads.flush(b, [{"flag": "no"}, {"flag": True}])
    assert loads.columns()["flag"] == "TEXT"
    assert loads.values(ids, '"FLAG"') == ["true", "false", "yes", "false", "no", "true"]
    assert [w[:3] for w in loads.widenings()] == [("flag", "BOOLEAN", "VARCHAR")]
    assert samples(b_registry, "segflow_sink_columns_widened_total") == {}
    a.close()
    b.close()

    # a widening stopped between its two renames (the column is missing): the next loader
    # finishes it before it loads, and every value is in the widened column
    steps = ddl.widen_steps("web", "widen", "qty", "NUMBER", "VARCHAR")
    for sql in steps[: ddl.SWAP]:
        loads.wh.query(sql)
    assert "qty" not in loads.columns() and len(leftovers(loads.columns())) == 2
    c, c_registry = loads.loader()
    ids += loads.flush(c, [{"qty": "three"}])
    assert loads.columns()["qty"] == "TEXT" and leftovers(loads.columns()) == []
    assert loads.values(ids, '"QTY"') == ["1", "2", None, None, None, None, "three"]
    assert samples(c_registry, "segflow_sink_strict_violations_total") in ({}, {(): 0.0})
    c.close()
