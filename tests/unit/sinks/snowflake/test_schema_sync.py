"""Schema sync carrying out widenings: the statements of each step of the ladder, a widening
another sink did first, and finishing a widening an earlier process left half done at any
step, for columns of any length (a twin of a 255-character column is cut, so its column cannot
be read off its name)."""

from __future__ import annotations

import re
from typing import Any
from unittest.mock import MagicMock, create_autospec

import pytest
from prometheus_client import CollectorRegistry

from sinks.snowflake import ddl
from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.errors import WarehouseMisfitError
from sinks.snowflake.evolution import Plan, Widening
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.schema_sync import SchemaSync
from sinks.snowflake.tables import SCHEMA_CHANGES, fixed_columns

_WAREHOUSE_TYPES = {
    "NUMBER": ("NUMBER", 0),
    "FLOAT": ("FLOAT", None),
    "VARCHAR": ("TEXT", None),
    "BOOLEAN": ("BOOLEAN", None),
    "TIMESTAMP_TZ": ("TIMESTAMP_TZ", None),
}
_ADD = re.compile(r'ADD COLUMN IF NOT EXISTS "([^"]+)" (\w+)')
_RENAME = re.compile(r'RENAME COLUMN "([^"]+)" TO "([^"]+)"')
_DROP = re.compile(r'DROP COLUMN IF EXISTS "([^"]+)"')


class Warehouse:
    """One schema's table layouts as the warehouse has them, changed by the DDL it is sent;
    a spec'd fake of the connection runs its statements here."""

    def __init__(self, tables: dict[str, dict[str, str]]) -> None:
        self.tables = tables
        self.sql: list[str] = []
        self.fail_at: str | None = None  # a statement that fails (another sink was first)
        self.conn: Any = create_autospec(SinkConnection, instance=True)
        self.conn.run.side_effect = self.run

    def run(self, sql: str, binds: Any = (), *, kind: str, table: str | None = None) -> Any:
        cur = MagicMock()
        if sql == ddl.columns_query():
            cur.fetchall.return_value = [
                (t.upper(), c.upper(), *_WAREHOUSE_TYPES[typ])
                for t, cols in self.tables.items()
                for c, typ in cols.items()
            ]
            return cur
        self.sql.append(sql)
        if self.fail_at is not None and sql == self.fail_at:
            raise WarehouseMisfitError("invalid identifier", 904)
        cols = self.tables[str(table)] if table else {}
        if m := _ADD.search(sql):
            name, typ = m.group(1).lower(), m.group(2)
            cols.setdefault(name, "NUMBER" if typ == "NUMBER(38,0)" else typ)
        elif m := _RENAME.search(sql):
            old, new = m.group(1).lower(), m.group(2).lower()
            if old not in cols or new in cols:
                raise WarehouseMisfitError("invalid identifier", 904)
            cols[new] = cols.pop(old)
        elif m := _DROP.search(sql):
            cols.pop(m.group(1).lower(), None)
        return cur


def sync(wh: Warehouse) -> tuple[SchemaSync, CollectorRegistry]:
    registry = CollectorRegistry()
    return SchemaSync(wh.conn, SinkMetrics(registry)), registry


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
    assert sql == ddl.widen_steps("web", "t", column, "NUMBER", "FLOAT")
    assert tables["t"] == {"id": "VARCHAR", column: "FLOAT"}


def test_a_twin_left_alone_by_an_older_version_is_renamed_to_its_column() -> None:
    tables = {"t": {"qty" + ddl.WIDEN_SUFFIX: "FLOAT"}}
    assert repair(tables) == [ddl.widen_steps("web", "t", "qty")[ddl.SWAP]]
    assert tables["t"] == {"qty": "FLOAT"}


def test_a_cut_twin_without_its_column_is_left_as_it_is() -> None:
    """Its column's name cannot be told: renaming it to the name before the suffix (a cut,
    hashed name) would put the values under a column no event ever names."""
    twin = ddl.twin_name("c" * 255)
    tables = {"t": {"id": "VARCHAR", twin: "FLOAT"}}
    assert repair(tables) == []
    assert tables["t"] == {"id": "VARCHAR", twin: "FLOAT"}


# The step a widening resumes from when a process died after running `done` of its steps.
_RESUMES = {0: None, 1: ddl.ADD, 2: ddl.ADD, 3: ddl.SWAP, 4: ddl.CATCH_UP, 5: ddl.CATCH_UP}


@pytest.mark.parametrize("column", ["qty", "q" * 255])
@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("NUMBER", "FLOAT"),
        ("NUMBER", "VARCHAR"),
        ("FLOAT", "VARCHAR"),
        ("BOOLEAN", "VARCHAR"),
        ("TIMESTAMP_TZ", "VARCHAR"),
    ],
)
@pytest.mark.parametrize("done", range(6))
def test_a_widening_killed_after_any_step_is_finished_by_the_next_process(
    column: str, source: str, target: str, done: int
) -> None:
    """A process killed between any two statements of a widening: the next one to read the
    layout runs the rest (from the step the layout shows; a copy is safe to run twice), ending
    with the column of the new type and nothing left beside it. Only the 255-character
    column's layout between the two renames (column gone, cut names) cannot be resolved."""
    steps = ddl.widen_steps("web", "t", column, source, target)
    wh = Warehouse({"t": {"id": "VARCHAR", column: source}})
    for sql in steps[:done]:
        wh.run(sql, kind="ddl", table="t")
    wh.sql.clear()
    first = _RESUMES[done]
    layout = sync(wh)[0].layout("web")
    if done == 3 and len(column) == 255:
        assert wh.sql == [] and column not in wh.tables["t"]  # logged for the operator
        return
    assert wh.sql == ([] if first is None else steps[first:])
    assert wh.tables["t"] == {"id": "VARCHAR", column: source if first is None else target}
    assert layout == {"t": wh.tables["t"]}


def test_a_widening_that_began_while_another_was_catching_up_is_finished_after_it() -> None:
    column = "qty"
    wh = Warehouse({"t": {column: "NUMBER"}})
    first = ddl.widen_steps("web", "t", column, "NUMBER", "FLOAT")
    for sql in first[: ddl.CATCH_UP]:
        wh.run(sql, kind="ddl", table="t")
    wh.run(ddl.widen_steps("web", "t", column, "FLOAT", "VARCHAR")[0], kind="ddl", table="t")
    wh.sql.clear()
    sync(wh)[0].layout("web")
    assert wh.sql == first[ddl.CATCH_UP :] + ddl.widen_steps("web", "t", column, "FLOAT", "VARCHAR")
    assert wh.tables["t"] == {column: "VARCHAR"}


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels.values()): s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == name
    }


def test_widen_reads_the_layout_afresh_and_widens_from_the_type_it_finds() -> None:
    """`widen` (also what `segflow promote` calls): the layout cached before is not trusted."""
    wh = Warehouse({"t": {"id": "VARCHAR", "qty": "NUMBER"}})
    schemas, registry = sync(wh)
    assert schemas.layout("web") == {"t": {"id": "VARCHAR", "qty": "NUMBER"}}
    wh.tables["t"]["qty"] = "FLOAT"  # another sink widened it meanwhile
    assert schemas.widen("web", "t", "qty", "VARCHAR") == "FLOAT"
    assert wh.sql == ddl.widen_steps("web", "t", "qty", "FLOAT", "VARCHAR")
    assert wh.tables["t"] == {"id": "VARCHAR", "qty": "VARCHAR"}
    assert samples(registry, "segflow_sink_columns_widened_total") == {("FLOAT", "VARCHAR"): 1}
    # nothing to do: already the type asked for, or asked to go down the ladder
    wh.sql.clear()
    assert schemas.widen("web", "t", "qty", "VARCHAR") is None
    assert schemas.widen("web", "t", "qty", "FLOAT") is None
    assert schemas.widen("web", "t", "nope", "VARCHAR") is None
    assert wh.sql == []


def test_a_widening_another_sink_finishes_first_is_not_an_error() -> None:
    wh = Warehouse({"t": {"qty": "BOOLEAN"}})
    schemas, registry = sync(wh)
    steps = ddl.widen_steps("web", "t", "qty", "BOOLEAN", "VARCHAR")
    run = wh.run

    def other_sink_first(sql: str, binds: Any = (), **kw: Any) -> Any:
        if sql == steps[ddl.SWAP]:  # the other sink ran every step meanwhile: no twin left
            wh.tables["t"] = {"qty": "VARCHAR"}
        return run(sql, binds, **kw)

    wh.conn.run.side_effect = other_sink_first
    assert schemas.widen("web", "t", "qty", "VARCHAR") is None
    assert wh.tables["t"] == {"qty": "VARCHAR"}
    assert samples(registry, "segflow_sink_columns_widened_total") == {}
    # a failure that leaves the column narrower is raised
    wh = Warehouse({"t": {"qty": "BOOLEAN"}})
    wh.fail_at = steps[ddl.RETIRE]
    with pytest.raises(WarehouseMisfitError):
        sync(wh)[0].widen("web", "t", "qty", "VARCHAR")


def test_a_planned_widening_is_carried_out_and_recorded_with_both_types() -> None:
    wh = Warehouse({"t": {"qty": "NUMBER"}, SCHEMA_CHANGES: dict(fixed_columns(SCHEMA_CHANGES))})
    schemas, registry = sync(wh)
    p = Plan(
        widen_columns={("web", "t"): {"qty": Widening("NUMBER", "VARCHAR", "VARCHAR", 3, "m")}}
    )
    schemas.apply(p)
    assert wh.tables["t"] == {"qty": "VARCHAR"}
    [record] = [c for c in wh.conn.run.call_args_list if c.kwargs.get("kind") == "insert"]
    sql, binds = record.args
    assert '"PREVIOUS_TYPE"' in sql
    assert binds[1:8] == ["t", "qty", "column_widened", "VARCHAR", "VARCHAR", 3, "m"]
    assert binds[-1] == "NUMBER"
    assert samples(registry, "segflow_sink_schema_changes_total") == {("column_widened",): 1}


def test_two_sinks_finishing_the_same_widening_both_go_on() -> None:
    steps = ddl.widen_steps("web", "t", "qty", "NUMBER", "VARCHAR")
    wh = Warehouse({"t": {"id": "VARCHAR", "qty": "NUMBER"}})
    for sql in steps[: ddl.SWAP]:
        wh.run(sql, kind="ddl", table="t")
    run = wh.run

    def other_sink_first(sql: str, binds: Any = (), **kw: Any) -> Any:
        if sql == steps[ddl.SWAP]:  # the other sink ran the rest meanwhile
            wh.tables["t"] = {"id": "VARCHAR", "qty": "VARCHAR"}
        return run(sql, binds, **kw)

    wh.conn.run.side_effect = other_sink_first
    assert sync(wh)[0].layout("web") == {"t": {"id": "VARCHAR", "qty": "VARCHAR"}}
    # a step failing while the widening is still unfinished is raised
    wh = Warehouse({"t": {"qty": "NUMBER"}})
    for sql in steps[: ddl.SWAP]:
        wh.run(sql, kind="ddl", table="t")
    wh.fail_at = steps[ddl.CATCH_UP]
    with pytest.raises(WarehouseMisfitError):
        sync(wh)[0].layout("web")
