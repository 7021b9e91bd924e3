"""Reserved column names per table, loaded through the real loader into the emulator (Snowflake's
limits checked by the strict wrapper): a `name` trait fills identifies, users, groups and
accounts, a page keeps its own name; and a warehouse the previous layout wrote (one reserved set
for every table: such values in `_unmapped`) is upgraded in place at start-up, once, with no row
or value lost."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from runtime.services import emulator
from runtime.settings import WarehouseSettings
from sinks.snowflake import layout_upgrade, migrations, rows
from sinks.snowflake.batcher import FlushBatch, PartitionSlice
from sinks.snowflake.loader import LoaderOptions, SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.rows import Origin, event_rows
from tests.integration.sink_support import clean_event

pytestmark = pytest.mark.integration

TOPIC = "layout.events"


class Loads:
    """One database, loaders of one group, flushes of clean events into partition 0, and one
    connection of the test's own for its queries."""

    def __init__(self, source: str) -> None:
        import snowflake.connector

        self.database = f"SINK_LAYOUT_{uuid.uuid4().hex[:10].upper()}"
        self.settings = WarehouseSettings(database=self.database, network_timeout_s=20)
        self.source = source
        self.expected = -1
        self.records = 0
        params = emulator.conn_params(timeout=20)
        self.conn = snowflake.connector.connect(paramstyle="qmark", **params)
        self.query(f'CREATE DATABASE IF NOT EXISTS "{self.database}"')
        self.query(f'USE DATABASE "{self.database}"')

    def query(self, sql: str, binds: list[Any] | None = None) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        cur.execute(sql, binds)
        return list(cur.fetchall())

    def loader(self) -> tuple[SnowflakeLoader, CollectorRegistry]:
        registry = CollectorRegistry()
        loader = SnowflakeLoader(self.settings, LoaderOptions(group_id="g"), SinkMetrics(registry))
        return loader, registry

    def flush(self, loader: SnowflakeLoader, events: list[tuple[str, dict[str, Any]]]) -> None:
        loader.ensure_offsets([(TOPIC, 0)])
        first, out = self.records, []
        for i, (call, over) in enumerate(events):
            rec = clean_event(call, first + i, source=self.source, **over)
            out += event_rows(rec, Origin(TOPIC, 0, first + i), audit=False)
        new = first + len(events)
        loader.flush(
            FlushBatch(
                [PartitionSlice(TOPIC, 0, self.expected, new, len(events))], out, len(events), 0
            )
        )
        self.expected, self.records = new, new

    def rows(self, table: str, *columns: str) -> dict[str, tuple[Any, ...]]:
        """id -> the columns (`_unmapped` parsed) of every row of `table`."""
        cols = ", ".join(f'"{c.upper()}"' for c in columns)
        found = self.query(f'SELECT "ID", {cols} FROM "{self.source.upper()}"."{table.upper()}"')
        out: dict[str, tuple[Any, ...]] = {}
        for ident, *values in found:
            assert ident not in out, f"{table}: {ident} twice"
            out[ident] = tuple(
                _parsed(v) if c == "_unmapped" else v for c, v in zip(columns, values, strict=True)
            )
        return out


def _parsed(raw: Any) -> Any:
    return None if raw is None else json.loads(raw) if isinstance(raw, str) else dict(raw)


def _strict_violations(registry: CollectorRegistry) -> float:
    return sum(
        s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "segflow_sink_strict_violations_total"
    )


def _traits(**traits: Any) -> dict[str, Any]:
    return {"traits": traits}


def test_a_name_trait_fills_identifies_users_groups_and_accounts(
    warehouse_conn_params: dict[str, Any],
) -> None:
    loads = Loads("crm")
    loader, registry = loads.loader()
    loads.flush(
        loader,
        [
            ("identify", {"message_id": "i1", "user_id": "u1", **_traits(name="Ada", plan="pro")}),
            ("group", {"message_id": "g1", "group_id": "acme", **_traits(name="Acme Inc")}),
            ("page", {"message_id": "p1", "properties": {"name": "spoof", "path": "/"}}),
            ("track", {"message_id": "t1", "event": "Item Viewed", "properties": {"name": "Lamp"}}),
        ],
    )
    assert loads.rows("identifies", "name", "_unmapped") == {"i1": ("Ada", None)}
    assert loads.rows("users", "name", "plan") == {"u1": ("Ada", "pro")}
    assert loads.rows("groups", "name", "group_id") == {"g1": ("Acme Inc", "acme")}
    assert loads.rows("accounts", "name") == {"acme": ("Acme Inc",)}
    assert loads.rows("pages", "name", "path", "_unmapped") == {
        "p1": ("Home", "/", {"properties.name": "spoof"})  # the page's own name stays
    }
    assert loads.rows("item_viewed", "name", "event") == {"t1": ("Lamp", "item_viewed")}
    assert _strict_violations(registry) == 0
    loader.close()
    loads.conn.close()


def _previous_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Map rows as the previous layout did: one reserved set on every table."""
    old = rows._Namer(layout_upgrade.LAYOUT_1_RESERVED)
    monkeypatch.setattr(rows, "_EVENT_NAMER", old)
    monkeypatch.setattr(rows, "_CALL_NAMERS", dict.fromkeys(rows._CALL_NAMERS, old))
    monkeypatch.setattr(rows, "_PROFILE_NAMERS", dict.fromkeys(rows._PROFILE_NAMERS, old))


def test_a_warehouse_of_the_previous_layout_is_upgraded_in_place_once(
    warehouse_conn_params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = Loads("legacy")
    with monkeypatch.context() as patch:
        _previous_layout(patch)
        loader, _ = loads.loader()
        loads.flush(
            loader,
            [
                ("identify", {"message_id": "i1", "user_id": "u1", **_traits(name="Ada")}),
                ("identify", {"message_id": "i2", "user_id": "u2", **_traits(name=42, id="x")}),
                ("identify", {"message_id": "i3", "user_id": "u3", **_traits(Name="B", name="C")}),
                ("identify", {"message_id": "i4", "user_id": "u4", **_traits(plan="free")}),
                ("identify", {"message_id": "i5", "user_id": "u5", **_traits(name="Eve")}),
                ("group", {"message_id": "g1", "group_id": "acme", **_traits(name="Acme")}),
                ("page", {"message_id": "p1", "properties": {"name": "spoof"}}),
                (
                    "track",
                    {"message_id": "t1", "event": "Item Viewed", "properties": {"name": "Lamp"}},
                ),
            ],
        )
        loader.close()
    # the first layout kept such a value under the column's name itself
    loads.query(
        'UPDATE "LEGACY"."IDENTIFIES" SET "_UNMAPPED" = PARSE_JSON(?) WHERE "ID" = ?',
        ['{"name": "Bare"}', "i5"],
    )
    before = {
        t: loads.rows(t, "_unmapped")
        for t in ("identifies", "users", "groups", "accounts", "pages", "item_viewed")
    }
    assert before["identifies"]["i1"] == ({"traits.name": "Ada"},)
    assert before["users"]["u1"] == ({"traits.name": "Ada"},)

    loader, registry = loads.loader()
    loader.connect()  # start-up: the upgrade runs here
    after = {t: loads.rows(t, "name", "_unmapped") for t in before}
    assert {t: set(r) for t, r in after.items()} == {t: set(r) for t, r in before.items()}
    assert after["identifies"] == {
        "i1": ("Ada", None),
        "i2": (None, {"traits.name": 42, "traits.id": "x"}),  # a number stays: the column is text
        "i3": ("C", {"traits.Name": "B"}),  # the key spelled as the column wins
        "i4": (None, None),
        "i5": ("Bare", None),
    }
    assert after["users"] == {
        "u1": ("Ada", None),
        "u2": (None, {"traits.name": 42, "traits.id": "x"}),
        "u3": ("C", {"traits.Name": "B"}),
        "u4": (None, None),
        "u5": ("Eve", None),
    }
    assert after["groups"] == {"g1": ("Acme", None)}
    assert after["accounts"] == {"acme": ("Acme", None)}
    assert after["pages"] == {"p1": ("Home", {"properties.name": "spoof"})}
    assert after["item_viewed"] == {"t1": ("Lamp", None)}
    changes = loads.query(
        'SELECT "TABLE_NAME", "COLUMN_NAME", "COLUMN_TYPE", "OCCURRENCES" '
        'FROM "LEGACY"."_SEGFLOW_SCHEMA_CHANGES" WHERE "CHANGE" = ? ORDER BY 1',
        [migrations.LAYOUT_MIGRATED],
    )
    assert changes == [
        ("accounts", "name", "VARCHAR", 1),
        ("groups", "name", "VARCHAR", 1),
        ("identifies", "name", "VARCHAR", 3),
        ("item_viewed", "name", "VARCHAR", 1),
        ("users", "name", "VARCHAR", 3),
    ]
    assert _strict_violations(registry) == 0

    # once: a restart, and a second sink that raced past the first check, change nothing
    loader.close()
    loader, _ = loads.loader()
    loader.connect()
    layouts = loader.layout._source_schemas()
    assert loader.layout.migrate_schema("legacy", layouts["legacy"]) == []
    assert {t: loads.rows(t, "name", "_unmapped") for t in before} == after
    assert loads.query(
        'SELECT COUNT(*) FROM "LEGACY"."_SEGFLOW_SCHEMA_CHANGES" WHERE "CHANGE" = ?',
        [migrations.LAYOUT_MIGRATED],
    ) == [(5,)]
    assert loads.query('SELECT "SCHEMA_NAME", "VERSION" FROM "_SEGFLOW"."_SEGFLOW_LAYOUT"') == [
        ("legacy", migrations.LAYOUT_VERSION)
    ]
    loader.close()
    loads.conn.close()


def test_the_upgrade_reads_a_table_larger_than_a_page_page_by_page(
    warehouse_conn_params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 4 rows and UPDATEs of 2: every value moves, copies of a row loaded twice move
    once (both copies), copies that differ stay, and the strict checks see nothing wrong."""
    loads = Loads("paged")
    n = 10
    with monkeypatch.context() as patch:
        _previous_layout(patch)
        loader, _ = loads.loader()
        loads.flush(
            loader,
            [
                ("identify", {"message_id": f"i{i}", "user_id": f"u{i}", **_traits(name=f"N{i}")})
                for i in range(n)
            ],
        )
        loader.close()
    table = '"PAGED"."IDENTIFIES"'
    loads.query(f'INSERT INTO {table} SELECT * FROM {table} WHERE "ID" = ?', ["i3"])
    ident = '"ID", "_SEGFLOW_TOPIC", "_SEGFLOW_PARTITION", "_SEGFLOW_OFFSET"'
    loads.query(  # a copy of i6 that differs: which to write is unknown
        f'INSERT INTO {table} ({ident}, "_UNMAPPED") SELECT {ident}, PARSE_JSON(?) '
        f'FROM {table} WHERE "ID" = ?',
        ['{"traits.name": "other"}', "i6"],
    )
    monkeypatch.setattr(migrations, "_ROWS_PER_UPDATE", 2)
    loader, registry = loads.loader()
    loader.layout.page_rows = 4  # i3's copies and i6's straddle pages
    loader.connect()
    found = loads.query(f'SELECT "ID", "NAME", TO_JSON("_UNMAPPED") FROM {table} ORDER BY 1, 2')
    moved = [(i, name, doc) for i, name, doc in found if i != "i6"]
    assert moved == sorted(
        [(f"i{i}", f"N{i}", None) for i in range(n) if i != 6] + [("i3", "N3", None)]
    )
    assert sorted(json.dumps([name, _parsed(doc)]) for i, name, doc in found if i == "i6") == [
        json.dumps([None, {"traits.name": "N6"}]),
        json.dumps([None, {"traits.name": "other"}]),
    ]
    assert loads.query(
        'SELECT "TABLE_NAME", "OCCURRENCES" FROM "PAGED"."_SEGFLOW_SCHEMA_CHANGES" '
        'WHERE "CHANGE" = ? AND "TABLE_NAME" = ?',
        [migrations.LAYOUT_MIGRATED, "identifies"],
    ) == [("identifies", n)]  # rows: i6 in neither copy, i3 in both
    assert _strict_violations(registry) == 0
    loader.close()
    loads.conn.close()
