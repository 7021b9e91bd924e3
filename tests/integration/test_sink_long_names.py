"""Names Snowflake would refuse and keys that lose their column, loaded through the real loader
into the emulator with Snowflake's limits checked (the strict wrapper is on for the emulator):
long nested keys, a 255-character column widened to FLOAT (its twin cut to fit), an interrupted
widening of such a column finished by a new loader, keys that normalise to nothing and three
keys that collide."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from schemas.naming import path_column
from schemas.snowflake_limits import MAX_IDENTIFIER_LENGTH
from sinks.snowflake import ddl
from tests.integration.sink_support import TrackLoads

pytestmark = pytest.mark.integration

LONG = "q" * 300  # a key whose column is cut to 255 characters
NESTED = {"a" * 200: {"b" * 200: 1}}


class Loads(TrackLoads):
    """One database, loaders of one group, flushes of track events into partition 0."""

    def __init__(self) -> None:
        super().__init__("names", "Names")

    def value(self, mid: str, column: str) -> Any:
        rows = self.wh.query(f'SELECT {ddl.quote(column)} FROM "WEB"."NAMES" WHERE "ID" = ?', [mid])
        assert len(rows) == 1
        return rows[0][0]


def strict_violations(registry: CollectorRegistry) -> float:
    """Statements the strict wrapper refused (a name over 255 characters, for one)."""
    return sum(
        s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "segflow_sink_strict_violations_total"
    )


def _json(raw: Any) -> dict[str, Any]:
    return {} if raw is None else json.loads(raw) if isinstance(raw, str) else dict(raw)


def test_long_names_land_and_a_255_character_column_widens(
    warehouse_conn_params: dict[str, Any],
) -> None:
    loads = Loads()
    loader, registry = loads.loader()
    long_column = path_column(LONG)
    assert len(long_column) == MAX_IDENTIFIER_LENGTH
    empty = {"$$$": "dollars", "日本": "kanji"}
    colliding = {"a b": 1, "a-b": 2, "A_B": 3}
    [first, keys] = loads.flush(loader, [{LONG: 1, **NESTED}, {**empty, **colliding}])
    cols = loads.columns()
    assert cols[long_column] == "NUMBER"
    assert max(len(c) for c in cols) == MAX_IDENTIFIER_LENGTH
    assert loads.value(first, long_column) == 1
    assert loads.value(first, path_column("a" * 200 + "." + "b" * 200)) == 1
    assert loads.value(keys, "a_b") == 1
    assert _json(loads.value(keys, "_unmapped")) == {
        "properties.$$$": "dollars",
        "properties.日本": "kanji",
        "properties.a-b": 2,
        "properties.A_B": 3,
    }

    [widened] = loads.flush(loader, [{LONG: 2.5}])  # a float meets the NUMBER column: widen
    cols = loads.columns()
    assert cols[long_column] == "FLOAT" and ddl.twin_name(long_column) not in cols
    assert loads.value(widened, long_column) == 2.5
    assert loads.value(first, long_column) == 1.0
    assert strict_violations(registry) == 0
    loader.close()


def test_an_interrupted_widening_of_a_255_character_column_is_finished(
    warehouse_conn_params: dict[str, Any],
) -> None:
    loads = Loads()
    loader, _ = loads.loader()
    long_column = path_column(LONG)
    [first] = loads.flush(loader, [{LONG: 7}])
    loader.close()
    # a process stopped after adding and filling the twin, before dropping the column
    for sql in ddl.widen_steps("web", "names", long_column)[:2]:
        loads.wh.query(sql)
    assert ddl.twin_name(long_column) in loads.columns()

    loader, registry = loads.loader()
    [later] = loads.flush(loader, [{LONG: 8}])
    cols = loads.columns()
    assert cols[long_column] == "FLOAT" and ddl.twin_name(long_column) not in cols
    assert loads.value(first, long_column) == 7.0 and loads.value(later, long_column) == 8.0
    assert strict_violations(registry) == 0
    loader.close()
