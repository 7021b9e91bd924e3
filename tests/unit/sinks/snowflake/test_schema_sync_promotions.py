"""A running sink learns of a promotion: it reads the registry with its layouts, which it reads
again once they are `layout_max_age_s` old, adds a promoted column its table lacks, and writes
the promoted key into the column from then on."""

from __future__ import annotations

from typing import Any
from unittest.mock import MagicMock, create_autospec

from prometheus_client import CollectorRegistry

from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.promotions import PROMOTIONS, REGISTRY_COLUMNS
from sinks.snowflake.rows import TableRow
from sinks.snowflake.schema_sync import SchemaSync
from sinks.snowflake.tables import Kind, fixed_columns

_TYPES = {
    "VARCHAR": "TEXT",
    "NUMBER": "NUMBER",
    "VARIANT": "VARIANT",
    "TIMESTAMP_TZ": "TIMESTAMP_TZ",
}


class Warehouse:
    def __init__(self) -> None:
        self.tables: dict[str, dict[str, str]] = {
            "plan_chosen": {**fixed_columns("plan_chosen"), "a_b": "NUMBER"},
            PROMOTIONS: dict(REGISTRY_COLUMNS),
        }
        self.registry: list[tuple[str, str, str, str]] = []
        self.statements: list[str] = []

    def run(self, sql: str, binds: Any = (), *, kind: str, table: str | None = None) -> Any:
        self.statements.append(sql)
        cur = MagicMock()
        if "information_schema.columns" in sql:
            cur.fetchall.return_value = [
                (t.upper(), c.upper(), _TYPES.get(typ, typ), 0)
                for t, cols in self.tables.items()
                for c, typ in cols.items()
            ]
        elif "_SEGFLOW_PROMOTIONS" in sql:
            cur.fetchall.return_value = list(self.registry)
        elif "ADD COLUMN" in sql:
            column = sql.split('"')[-2].lower()
            self.tables["plan_chosen"][column] = sql.rsplit(" ", 1)[-1]
        return cur


def sync_on(wh: Warehouse) -> SchemaSync:
    conn = create_autospec(SinkConnection, instance=True)
    conn.run.side_effect = wh.run
    return SchemaSync(conn, SinkMetrics(CollectorRegistry()))


def rows() -> list[TableRow]:
    values = {"id": "m1", "received_at": "2026-01-05T12:00:00Z", "a_b": 1}
    return [TableRow("web", "plan_chosen", Kind.APPEND, values, {"properties.a-b": "x"}, "m1")]


def test_a_promotion_registered_while_the_sink_runs_reaches_it_after_the_max_age() -> None:
    wh = Warehouse()
    sync = sync_on(wh)
    first = sync.plan_flush(rows())
    assert first.rows[0].unmapped == {"properties.a-b": "x"}  # not promoted yet
    wh.registry.append(("PLAN_CHOSEN", "properties.a-b", "A_B_TEXT", "VARCHAR"))
    ahead = sync.plan_ahead(rows())
    assert ahead is not None and ahead.rows[0].unmapped == {"properties.a-b": "x"}  # cached
    generation = sync.generation
    sync.layout_max_age_s = 0.0  # the cached layout is now too old
    assert sync.plan_ahead(rows()) is None  # a stale layout is never planned on
    p = sync.plan_flush(rows())
    assert sync.generation > generation  # flushes prepared on the old layout are planned again
    assert p.rows[0].values["a_b_text"] == "x"
    assert p.rows[0].unmapped is None
    # the column the registry names was added by the sink itself, before its transaction
    assert any('ADD COLUMN IF NOT EXISTS "A_B_TEXT" VARCHAR' in s for s in wh.statements)
    assert not p.has_ddl and p.columns[("web", "plan_chosen")]["a_b_text"] == "VARCHAR"


def test_fresh_layouts_are_not_read_again() -> None:
    wh = Warehouse()
    sync = sync_on(wh)
    sync.plan_flush(rows())
    reads = sum("information_schema" in s for s in wh.statements)
    sync.plan_flush(rows())
    assert sync.plan_ahead(rows()) is not None
    assert sum("information_schema" in s for s in wh.statements) == reads
