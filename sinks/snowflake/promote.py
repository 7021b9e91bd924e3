"""`segflow promote`: a key of `_unmapped` moved into a typed column, history included, while
the sinks keep loading.

1. Read the table's layout and the schema's `_segflow_promotions` registry; scan the rows
   holding the key (their id, their `_unmapped` as JSON text, whether the target column holds
   a value; only rows with the key, `GET` in SQL); plan (promotions.plan_promotion, counting
   values by type). A dry run stops here.
2. Create the registry and `_segflow_schema_changes` if missing (DDL commits by itself in
   Snowflake, so it comes first and is safe to repeat) and register the promotion. Running
   sinks read the registry with their layouts (at most `promotions.LAYOUT_MAX_AGE_S` old), add
   the column if the table lacks it and write the key into it from then on. Promote waits for
   the column up to `grace_s` and adds it itself when no sink did (none runs, or none loads
   the schema now). The sinks add it because they alter the table between their own
   transactions: ALTER from another session while a sink's transaction writes the table is
   harmless in Snowflake (DDL is not isolated there) but aborts that transaction on the
   emulator.
3. Scan again, before registering (the rows as planned), and stage the new values and
   `_unmapped` documents (computed here: the emulator lacks OBJECT_DELETE, and the text cast
   into the column is the sink's own, staging.to_text) in a staging table of the control
   schema; then, once the column exists, one transaction: an UPDATE of the rows still as they
   were read (`_unmapped` unchanged, column empty) and a ``promoted`` row in
   `_segflow_schema_changes` with the count. A row changed between scan and update (another
   promotion of the same table) is found again by a new scan.
4. A flush a sink planned before it read the registry may still load the key into
   `_unmapped`: `grace_s` after the registration (longer than the layout refresh and a flush)
   promote sweeps again (scan and step 3), and again after another grace while a sweep still
   finds rows, at most `max_sweeps` times; rows left then are reported (exit status 1).

Every scan reads `page_rows` rows at a time and stages a page before it reads the next: the
process holds one page (and counters), whatever the size of the table.

Running it again finds nothing left to move and says so (it still honours the grace of an
earlier run that was interrupted). Values never appear in logs or messages, only counts.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.settings import SegflowSettings
from sinks.snowflake import ddl
from sinks.snowflake.connection import staging_name
from sinks.snowflake.promotions import (
    DETECTED_BY_PROMOTE,
    PROMOTED,
    PROMOTIONS,
    REGISTRY_COLUMNS,
    STAGING_COLUMNS,
    Promotion,
    PromotionError,
    PromotionPlan,
    backfill_statement,
    cell_text,
    default_column,
    dump_unmapped,
    fits,
    infer_type,
    load_unmapped,
    plan_promotion,
    registry_entries,
    registry_query,
    scan_query,
    value_kind,
)
from sinks.snowflake.session import WarehouseSession, fetch_pages
from sinks.snowflake.tables import SCHEMA_CHANGES, fixed_columns

logger = logging.getLogger(__name__)

_STAGE_ROWS = 500  # rows per INSERT into the staging table (4 binds each)
_RESCANS = 5  # scans within one sweep while rows change under it
_POLL_S = 0.5  # between looks for the column the sinks add


class PromoteSettings(SegflowSettings):
    """`segflow promote`: how long it waits for running sinks before sweeping again."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_PROMOTE_")

    grace_s: float = Field(
        90.0,
        ge=0,
        description="Seconds after the promotion before the sweep; must exceed the sinks' layout "
        "refresh (30 s) plus their longest flush (0: no sinks run: no wait, no sweep)",
    )
    control_schema: str = Field(
        "_segflow", description="Schema of the sinks' staging area (a staging table goes there)"
    )
    max_sweeps: int = Field(
        5, ge=1, description="Sweeps (each after a grace) while rows loaded meanwhile turn up"
    )
    page_rows: int = Field(
        10_000,
        ge=1,
        description="Rows read from the warehouse at a time: what bounds promote's memory",
    )


@dataclass
class PromoteReport:
    """What one run did."""

    plan: PromotionPlan
    moved: int = 0
    swept: list[int] = field(default_factory=list)
    left: int = 0
    """Rows still holding the key that could move (a sink still behind): exit status 1."""
    kept: int = 0
    """Rows still holding the key that stays: the column holds a value there, or it misfits."""
    dry_run: bool = False

    def summary(self) -> list[str]:
        p = self.plan
        where = f"{p.schema}.{p.table}.{p.column}"
        if self.dry_run:
            return [*p.describe(), "dry run: nothing changed"]
        total = self.moved + sum(self.swept)
        lines = []
        if total == 0 and p.registered:
            lines.append(f"nothing left to move: {p.key} is already promoted to {where}")
        else:
            lines.append(f"moved {self.moved} rows' {p.key} into {where} ({p.column_type})")
        if self.swept:
            lines.append(f"swept after the grace: {', '.join(map(str, self.swept))} rows")
        if self.left:
            lines.append(f"{self.left} rows still hold {p.key} in _unmapped")
        if self.kept:
            lines.append(
                f"{self.kept} rows keep {p.key} in _unmapped (the column holds a value there, or "
                "the value does not fit its type)"
            )
        return lines


Row = tuple[str, str, bool]  # id, _unmapped as JSON text, target column holds a value


@dataclass
class Staged:
    """A staging table holding the rows a backfill moves (created with its first row)."""

    table: str
    rows: int = 0
    kinds: set[str] = field(default_factory=set)
    example: str = ""


class Promoter:
    """Carries out promotions on one warehouse session."""

    def __init__(
        self,
        session: WarehouseSession,
        settings: PromoteSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.sleep = sleep
        self.now = now
        self.progress = progress

    # -- warehouse facts ---------------------------------------------------------------------
    def layout(self, schema: str) -> dict[str, dict[str, str]]:
        from sinks.snowflake.evolution import column_type_from_warehouse

        rows = self.session.fetch_all(ddl.columns_query(), [schema.upper()])
        out: dict[str, dict[str, str]] = {}
        for table, column, data_type, scale in rows:
            cols = out.setdefault(str(table).lower(), {})
            cols[str(column).lower()] = column_type_from_warehouse(str(data_type), scale)
        return out

    def registered(self, schema: str, table: str, key: str) -> Promotion | None:
        rows = self.session.fetch_all(registry_query(schema))
        return next((p for p in registry_entries(rows).get(table, []) if p.key == key), None)

    def promoted_at(self, schema: str, table: str, key: str) -> datetime:
        rows = self.session.fetch_all(
            f'SELECT MIN("PROMOTED_AT") FROM {ddl.qualified(schema, PROMOTIONS)} '
            'WHERE "TABLE_NAME" = ? AND "UNMAPPED_KEY" = ?',
            [table, key],
        )
        value = rows[0][0] if rows and rows[0][0] is not None else self.now()
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.fromisoformat(str(value))

    def scan(
        self, schema: str, table: str, key: str, column: str, exists: bool
    ) -> Iterator[list[Row]]:
        """The rows holding the key, `page_rows` at a time: one page is held, never them all."""
        cur = self.session.run(
            scan_query(schema, table, column, exists), [key], kind="select", table=table
        )
        for page in fetch_pages(cur, self.settings.page_rows, table=table):
            yield [(str(i), str(u), bool(o)) for i, u, o in page]

    def values(
        self, schema: str, table: str, key: str, column: str, exists: bool
    ) -> Iterator[tuple[Any, bool]]:
        """The key's values (and whether the column holds one there), read page by page."""
        for page in self.scan(schema, table, key, column, exists):
            for _, doc, occupied in page:
                value = load_unmapped(doc).get(key)
                if value is not None:
                    yield value, occupied

    # -- the job -----------------------------------------------------------------------------
    def promote(
        self,
        schema: str,
        table: str,
        key: str,
        *,
        column: str | None = None,
        column_type: str | None = None,
        dry_run: bool = False,
    ) -> PromoteReport:
        layout = self.layout(schema)
        cols = layout.get(table)
        if cols is None:
            raise PromotionError(f"no table {schema}.{table} in the warehouse")
        if "_unmapped" not in cols or "id" not in cols:
            raise PromotionError(f"{schema}.{table} has no _unmapped column to promote from")
        registered = self.registered(schema, table, key) if PROMOTIONS in layout else None
        target = column or (registered.column if registered else default_column(key))
        exists = bool(target) and target in cols
        plan = plan_promotion(
            schema=schema,
            table=table,
            key=key,
            columns=cols,
            values=self.values(schema, table, key, target, exists) if target else (),
            registered=registered,
            column=column,
            column_type=column_type,
        )
        report = PromoteReport(plan, dry_run=dry_run)
        if dry_run:
            return report
        self.prepare(plan, layout)
        with self.staged(plan, exists) as staged:  # the rows as planned
            if registered is None:
                self._register(plan)  # running sinks add the column and write the key into it
            if not plan.column_exists:
                self.await_column(plan)
            report.moved = self.move(plan, staged)
        if self.settings.grace_s > 0:
            promoted_at = self.promoted_at(schema, table, key)
            for _ in range(self.settings.max_sweeps):
                wait = self.settings.grace_s - (self.now() - promoted_at).total_seconds()
                if wait > 0:
                    self.progress(f"waiting {wait:.0f} s for running sinks to pick it up")
                    self.sleep(wait)
                moved = self.sweep(plan)
                report.swept.append(moved)
                if moved == 0:
                    break
                promoted_at = self.now()  # a sink was still behind: give it another grace
        for page in self.scan(schema, table, key, plan.column, True):
            for _, doc, occupied in page:
                if self._movable(plan, doc, occupied):
                    report.left += 1
                else:
                    report.kept += 1
        return report

    def prepare(self, plan: PromotionPlan, layout: dict[str, dict[str, str]]) -> None:
        """The DDL (each statement commits by itself and is safe to repeat)."""
        run = self.session.run
        s = plan.schema
        run(ddl.create_table(s, PROMOTIONS, REGISTRY_COLUMNS), kind="ddl", table=PROMOTIONS)
        changes = fixed_columns(SCHEMA_CHANGES)
        run(ddl.create_table(s, SCHEMA_CHANGES, changes), kind="ddl", table=SCHEMA_CHANGES)
        have = layout.get(SCHEMA_CHANGES, changes)
        for name, typ in changes.items():
            if name not in have:
                run(ddl.add_column(s, SCHEMA_CHANGES, name, typ), kind="ddl", table=SCHEMA_CHANGES)

    def await_column(self, plan: PromotionPlan) -> None:
        """The column, added by a running sink once it read the registry; by promote itself
        when none did within the grace (none runs, or none loads this schema now)."""
        grace = self.settings.grace_s
        if grace > 0:
            self.progress(f"waiting for the sinks to add {plan.column} (at most {grace:g} s)")
        for _ in range(math.ceil(grace / _POLL_S)):
            if plan.column in self.layout(plan.schema).get(plan.table, {}):
                return
            self.sleep(_POLL_S)
        run = self.session.run
        t = plan.table
        run(ddl.add_column(plan.schema, t, plan.column, plan.column_type), kind="ddl", table=t)

    def sweep(self, plan: PromotionPlan) -> int:
        """Move what rows loaded meanwhile hold of the key; rescan while rows change under it."""
        total = 0
        for _ in range(_RESCANS):
            with self.staged(plan, True) as staged:
                if not staged.rows:
                    break
                total += self.move(plan, staged)
        return total

    @staticmethod
    def _movable(plan: PromotionPlan, unmapped: str, occupied: bool) -> bool:
        value = load_unmapped(unmapped).get(plan.key)
        return not occupied and value is not None and fits(plan.column_type, value)

    @contextmanager
    def staged(self, plan: PromotionPlan, exists: bool) -> Iterator[Staged]:
        """Scan the rows holding the key and stage those that can move, a page at a time (one
        page is held, never the table); the staging table is dropped on leaving."""
        out = Staged(staging_name(self.settings.control_schema))  # a sink sweeps it if left
        run = self.session.run
        try:
            for page in self.scan(plan.schema, plan.table, plan.key, plan.column, exists):
                binds: list[Any] = []
                for ident, old, occupied in page:
                    doc = load_unmapped(old)
                    value = doc.get(plan.key)
                    if occupied or value is None or not fits(plan.column_type, value):
                        continue
                    out.kinds.add(value_kind(value))
                    del doc[plan.key]
                    binds += [ident, old, dump_unmapped(doc), cell_text(value, plan.column_type)]
                if not binds:
                    continue
                if not out.rows:
                    run(ddl.create_schema(self.settings.control_schema), kind="ddl")
                    run(ddl.create_staging(out.table, STAGING_COLUMNS), kind="ddl")
                    out.example = str(binds[0])
                self._stage(out.table, binds)
                out.rows += len(binds) // 4
            yield out
        finally:
            if out.rows:
                run(f"DROP TABLE IF EXISTS {ddl.table_ref(out.table)}", kind="ddl")

    def _stage(self, staging: str, binds: list[Any]) -> None:
        """One page's rows (4 binds each) into the staging table, `_STAGE_ROWS` a statement."""
        for i in range(0, len(binds), 4 * _STAGE_ROWS):
            chunk = binds[i : i + 4 * _STAGE_ROWS]
            values = ", ".join(["(?, ?, ?, ?)"] * (len(chunk) // 4))
            self.session.run(
                f"INSERT INTO {ddl.table_ref(staging)} "
                f"SELECT column1, column2, column3, column4 FROM VALUES {values}",
                chunk,
                kind="insert",
            )

    def move(self, plan: PromotionPlan, staged: Staged) -> int:
        """One transaction: the staged rows' values into the column, the key out of their
        `_unmapped`, and the record of it. Returns the rows moved."""
        if not staged.rows:
            return 0
        with self.session.transaction():
            cur = self.session.run(
                backfill_statement(
                    plan.schema, plan.table, staged.table, plan.column, plan.column_type
                ),
                kind="update",
                table=plan.table,
            )
            moved = max(int(cur.rowcount or 0), 0)
            if moved:
                self._record(plan, moved, infer_type(staged.kinds), staged.example)
        return moved

    def _register(self, plan: PromotionPlan) -> None:
        self.session.run(
            f"INSERT INTO {ddl.qualified(plan.schema, PROMOTIONS)} "
            '("ID", "TABLE_NAME", "UNMAPPED_KEY", "COLUMN_NAME", "COLUMN_TYPE", "PROMOTED_AT") '
            "SELECT column1, column2, column3, column4, column5, CAST(column6 AS TIMESTAMP_TZ) "
            "FROM VALUES (?, ?, ?, ?, ?, ?)",
            [
                uuid.uuid4().hex,
                plan.table,
                plan.key,
                plan.column,
                plan.column_type,
                self.now().isoformat(),
            ],
            kind="insert",
            table=PROMOTIONS,
        )

    def _record(self, plan: PromotionPlan, moved: int, vtype: str, example: str) -> None:
        self.session.run(
            f"INSERT INTO {ddl.qualified(plan.schema, SCHEMA_CHANGES)} "
            '("ID", "DETECTED_AT", "DETECTED_BY", "TABLE_NAME", "COLUMN_NAME", "CHANGE", '
            '"COLUMN_TYPE", "VALUE_TYPE", "OCCURRENCES", "EXAMPLE_MESSAGE_ID", "FIELD") '
            "SELECT column1, CAST(column2 AS TIMESTAMP_TZ), column3, column4, column5, column6, "
            "column7, column8, column9, column10, column11 "
            "FROM VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                uuid.uuid4().hex,
                self.now().isoformat(),
                DETECTED_BY_PROMOTE,
                plan.table,
                plan.column,
                PROMOTED,
                plan.column_type,
                vtype,
                moved,
                example or None,
                plan.key,
            ],
            kind="insert",
            table=SCHEMA_CHANGES,
        )
