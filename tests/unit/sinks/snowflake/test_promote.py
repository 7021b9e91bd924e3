"""The promotion job's steps against a spec'd fake session holding one table: register, the
column (added by promote when no sink adds it within the grace), the backfill in one
transaction, the sweep after the grace catching a row a stale sink loaded, a run again."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import MagicMock, create_autospec

import pytest

from sinks.snowflake.promote import Promoter, PromoteSettings
from sinks.snowflake.promotions import PromotionError
from sinks.snowflake.session import WarehouseSession
from sinks.snowflake.tables import fixed_columns

KEY = "properties.a-b"


class Table:
    """plan_chosen of schema web, and the statements the job sends."""

    def __init__(self) -> None:
        self.columns = {**fixed_columns("plan_chosen"), "a_b": "NUMBER"}
        self.rows: dict[str, dict[str, Any]] = {}
        self.registry: list[tuple[str, str, str, str]] = []
        self.staged: list[Any] = []
        self.statements: list[str] = []
        self.now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
        self.promoted_at: datetime | None = None

    def add(self, ident: str, value: Any) -> None:
        self.rows[ident] = {"a_b": 1, "_unmapped": {KEY: value, "other": 1}}

    def run(self, sql: str, binds: Any = (), *, kind: str = "", table: str | None = None) -> Any:
        self.statements.append(sql)
        cur = MagicMock()
        rows = self.answer(sql, list(binds or []), cur)
        cur.fetchall.return_value = list(rows)

        def fetchmany(size: int) -> list[Any]:
            page, rows[:] = rows[:size], rows[size:]
            return page

        cur.fetchmany.side_effect = fetchmany
        return cur

    def fetch_all(self, sql: str, binds: Any = (), *, kind: str = "select") -> list[Any]:
        return list(self.run(sql, binds, kind=kind).fetchall())

    def answer(self, sql: str, binds: list[Any], cur: Any) -> list[Any]:
        if "information_schema.columns" in sql:
            cols = [("PLAN_CHOSEN", c.upper(), t, 0) for c, t in self.columns.items()]
            return cols + [("_SEGFLOW_PROMOTIONS", "ID", "TEXT", 0)] * bool(self.registry)
        if sql.startswith('SELECT "TABLE_NAME"'):
            return list(self.registry)
        if 'MIN("PROMOTED_AT")' in sql:
            return [(self.promoted_at,)]
        if sql.startswith('SELECT "ID", "DOC"'):
            column = re.search(r'AS "DOC", (.*?) AS "OCCUPIED"', sql)
            col = re.findall(r'"([A-Z_]+)" IS NOT NULL', column.group(1)) if column else []
            return [
                (i, json.dumps(r["_unmapped"]), bool(col) and r.get(col[0].lower()) is not None)
                for i, r in self.rows.items()
                if r["_unmapped"] and KEY in r["_unmapped"]
            ]
        if "ADD COLUMN" in sql and "PLAN_CHOSEN" in sql:
            self.columns[sql.split('"')[-2].lower()] = sql.rsplit(" ", 1)[-1]
        if sql.startswith("INSERT INTO") and "_SEGFLOW_STAGING_" in sql:
            self.staged += binds
        if sql.startswith('INSERT INTO "WEB"."_SEGFLOW_PROMOTIONS"'):
            self.registry.append(("PLAN_CHOSEN", binds[2], binds[3].upper(), binds[4]))
            self.promoted_at = self.now
        if sql.startswith("UPDATE"):
            cur.rowcount = self.update(sql)
        return []

    def update(self, sql: str) -> int:
        column = re.search(r'SET "([A-Z_]+)"', sql)
        assert column is not None
        col = column.group(1).lower()
        moved = 0
        for i in range(0, len(self.staged), 4):
            ident, old, new, value = self.staged[i : i + 4]
            row = self.rows[ident]
            if json.dumps(row["_unmapped"]) == old and row.get(col) is None:
                row[col] = value
                row["_unmapped"] = json.loads(new) if new else None
                moved += 1
        self.staged = []
        return moved


def promoter(
    table: Table, grace_s: float, on_sleep: Any = None, page_rows: int = 10_000
) -> tuple[Promoter, list[float]]:
    session = create_autospec(WarehouseSession, instance=True)
    session.run.side_effect = table.run
    session.fetch_all.side_effect = table.fetch_all
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        table.now += timedelta(seconds=seconds)
        if on_sleep is not None:
            on_sleep(len(slept))

    settings = PromoteSettings(grace_s=grace_s, page_rows=page_rows)
    return Promoter(session, settings, sleep=sleep, now=lambda: table.now), slept


def test_history_and_rows_a_stale_sink_loads_are_moved_and_recorded() -> None:
    table = Table()
    for i in range(3):
        table.add(f"h{i}", f"v{i}")

    def stale_sink(sleeps: int) -> None:
        if sleeps == 3:  # during the grace, a sink still on the old mapping loads a row
            table.add("late", "v-late")

    job, slept = promoter(table, grace_s=2.0, on_sleep=stale_sink)
    report = job.promote("web", "plan_chosen", KEY, column="a_b_text")
    assert (report.moved, report.swept, report.left, report.kept) == (3, [1, 0], 0, 0)
    assert {i: r["a_b_text"] for i, r in table.rows.items()} == {
        "h0": "v0",
        "h1": "v1",
        "h2": "v2",
        "late": "v-late",
    }
    assert all(r["_unmapped"] == {"other": 1} for r in table.rows.values())
    # registered first; no sink added the column within the grace: promote added it
    sql = table.statements
    register = next(
        i for i, s in enumerate(sql) if s.startswith('INSERT INTO "WEB"."_SEGFLOW_PROMOTIONS"')
    )
    add = next(i for i, s in enumerate(sql) if 'ADD COLUMN IF NOT EXISTS "A_B_TEXT" VARCHAR' in s)
    update = next(i for i, s in enumerate(sql) if s.startswith("UPDATE"))
    assert register < add < update
    # looked for the column for the whole grace; the sweep found a row, so it waited a grace
    # more and swept again
    assert slept == [0.5] * 4 + [2.0]
    changes = [s for s in sql if s.startswith('INSERT INTO "WEB"."_SEGFLOW_SCHEMA_CHANGES"')]
    assert len(changes) == 2  # the backfill and the sweep that moved a row
    job.session.transaction.assert_called()  # type: ignore[attr-defined]
    assert (
        "moved 3 rows' properties.a-b into web.plan_chosen.a_b_text (VARCHAR)" in report.summary()
    )


def test_a_run_again_has_nothing_to_move_and_a_dry_run_changes_nothing() -> None:
    table = Table()
    table.add("h0", "v0")
    job, _ = promoter(table, grace_s=0.0)
    dry = job.promote("web", "plan_chosen", KEY, column="a_b_text", dry_run=True)
    assert dry.summary()[-1] == "dry run: nothing changed"
    assert not any(s.startswith(("INSERT", "UPDATE", "ALTER", "CREATE")) for s in table.statements)
    first = job.promote("web", "plan_chosen", KEY, column="a_b_text")
    assert first.moved == 1 and first.swept == []  # no grace: no sinks running, no sweep
    again = job.promote("web", "plan_chosen", KEY)  # the registry names the column
    assert again.moved == 0
    assert again.summary()[0].startswith("nothing left to move")
    # a row whose column got a value while its key stayed (a profile merged by a sink still
    # on the old mapping) is reported, not overwritten
    table.rows["h0"]["_unmapped"] = {KEY: "newer"}
    kept = job.promote("web", "plan_chosen", KEY)
    assert (kept.moved, kept.left, kept.kept) == (0, 0, 1)
    assert table.rows["h0"]["a_b_text"] == "v0"
    assert "1 rows keep properties.a-b in _unmapped" in kept.summary()[-1]


def test_refusals_change_nothing() -> None:
    table = Table()
    table.add("h0", "v0")
    job, _ = promoter(table, grace_s=0.0)
    with pytest.raises(PromotionError, match="already holds a value"):
        job.promote("web", "plan_chosen", KEY)  # a_b: the collision winner's column
    with pytest.raises(PromotionError, match=r"no table web\.nope"):
        job.promote("web", "nope", KEY)
    assert not any(s.startswith(("INSERT", "UPDATE", "ALTER", "CREATE")) for s in table.statements)


def test_scans_read_a_page_at_a_time_and_stage_it_before_reading_the_next() -> None:
    """Memory is bounded by the page, not the table: no scan is fetched whole, and a page's
    rows are in the staging table before the next page is read."""
    table = Table()
    for i in range(11):
        table.add(f"h{i}", f"v{i}")
    scans: list[list[int]] = []  # per scan, per page read: rows read and not staged yet
    run = table.run

    def paged_run(sql: str, binds: Any = (), **kw: Any) -> Any:
        cur = run(sql, binds, **kw)
        if sql.startswith('SELECT "ID", "DOC"'):
            cur.fetchall.side_effect = AssertionError("a scan fetched whole")
            fetch, read, staged_before = cur.fetchmany.side_effect, [0], len(table.staged)
            held: list[int] = []
            scans.append(held)

            def fetchmany(size: int) -> list[Any]:
                assert size == 4
                held.append(read[0] - (len(table.staged) - staged_before) // 4)
                page: list[Any] = fetch(size)
                read[0] += len(page)
                return page

            cur.fetchmany.side_effect = fetchmany
        return cur

    job, _ = promoter(table, grace_s=0.0, page_rows=4)
    job.session.run.side_effect = paged_run  # type: ignore[attr-defined]
    report = job.promote("web", "plan_chosen", KEY, column="a_b_text")
    assert (report.moved, report.left, report.kept) == (11, 0, 0)
    assert [r["a_b_text"] for r in table.rows.values()] == [f"v{i}" for i in range(11)]
    assert all(r["_unmapped"] == {"other": 1} for r in table.rows.values())
    # plan, stage, what is left: 11 rows in pages of 4 (4, 4, 3, then none); the staging scan
    # staged each page before it read the next
    assert [len(held) for held in scans] == [4, 4, 1]
    assert scans[1] == [0, 0, 0, 0]
