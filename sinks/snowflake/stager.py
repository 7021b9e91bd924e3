"""A flush's rows on their way into the warehouse: the Parquet file, the PUT, the staging table.

Preparing a flush (`Stager.write`) needs no warehouse: one Parquet file with one staged row per
event (its row flagged to feed tracks and audit_log too: staging.stage_units), in `stage_dir`.
The consumer does it ahead, in its own thread, while another flush is in the warehouse; the
result, a `StagedFlush`, travels on the batch as its `prepared` (batcher.Prepared, the protocol
the batcher knows it by) and is used only if no layout changed since (its `generation`).

Staging (`stage`) runs outside the flush's transaction, since it only touches this process's
staging table: the table is (re-)created only when it lacks a staged column or holds one with
another type (every flush's transaction empties it, and a rolled back one leaves it as it was);
a re-created table keeps the old one's other columns (`widened`), so a flush with fewer tables
than the one before needs no DDL. Then the file is PUT to the control schema's stage. Inside
the transaction the file is copied in (`copy`) and the table emptied again (`empty`). The
table's name carries its creation time, which other instances' sweeps judge by
(connection.py): it is renewed every quarter of `staging_max_age_h`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import SegflowError
from schemas.snowflake_limits import MAX_COLUMNS_PER_TABLE
from sinks.snowflake import ddl
from sinks.snowflake.connection import STAGE, SinkConnection, staging_name
from sinks.snowflake.errors import WarehouseRetryableError
from sinks.snowflake.evolution import Plan
from sinks.snowflake.rows import TableRow
from sinks.snowflake.staging import group_rows, stage_units, unit_stage_types, write_units

logger = logging.getLogger(__name__)

Columns = dict[str, str]

# seconds per hour of `staging_max_age_h`, over four: the name is renewed at a quarter of it
_RENEW_FACTOR = 900


@dataclass
class StagedFlush:
    """A flush's work before the warehouse: the plan, its rows by table and the staged file
    (the loader's batcher.Prepared)."""

    generation: int
    """The layouts' generation it was planned against (schema_sync.SchemaSync.generation)."""
    plan: Plan
    groups: dict[tuple[str, str], list[TableRow]]
    staged: Columns
    """The staged file's columns and their types."""
    load_id: str
    path: Path
    staged_rows: int
    repeated: dict[str, int]
    """Rows per table dropped as repeats of an id within the batch."""

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def holds(table: Columns | None, staged: Columns) -> bool:
    """Whether a staging table of columns `table` takes a file of columns `staged` as it is:
    each staged column there with the same type (COPY ... MATCH_BY_COLUMN_NAME loads NULL into
    the table's other columns, which no insert of that flush reads)."""
    return table is not None and all(table.get(name) == typ for name, typ in staged.items())


def widened(table: Columns | None, staged: Columns) -> Columns:
    """The columns of a re-created staging table: `staged`, and the old table's other columns
    that still fit under Snowflake's column limit, so flushes of alternating table mixes (the
    usual case: not every call type in every flush) do not re-create it each time."""
    out = dict(staged)
    for name, typ in (table or {}).items():
        if len(out) >= MAX_COLUMNS_PER_TABLE:
            break
        out.setdefault(name, typ)
    return out


class Stager:
    """The staged file of a flush and this process's staging table."""

    def __init__(
        self,
        conn: SinkConnection,
        control_schema: str,
        *,
        stage_dir: Path,
        staging_max_age_h: float = 24.0,
    ) -> None:
        self.conn = conn
        self.control_schema = control_schema
        self.stage_dir = stage_dir
        self.staging_max_age_h = staging_max_age_h
        self.table = staging_name(control_schema)
        """The staging table ("schema.name")."""
        self._since = time.monotonic()
        self._columns: Columns | None = None  # the staging table's, when known

    def reset(self) -> None:
        """The staging table's columns are not known any more (the session was dropped)."""
        self._columns = None

    def write(self, p: Plan, repeated: dict[str, int], generation: int) -> StagedFlush:
        """The flush's Parquet file (one staged row per event, staging.stage_units)."""
        groups = group_rows(p.rows)
        staged = unit_stage_types(groups.keys(), p.columns)
        load_id = uuid.uuid4().hex
        path = self.stage_dir / f"segflow-flush-{load_id}.parquet"
        prepared = StagedFlush(generation, p, groups, staged, load_id, path, 0, repeated)
        try:
            units = stage_units(p.rows, p.columns)
            prepared.staged_rows = write_units(path, units, p.columns, staged) if units else 0
        except BaseException:
            prepared.discard()
            raise
        return prepared

    def stage(self, prepared: StagedFlush) -> None:
        """The staging table (empty, with this flush's columns) and the file in the stage."""
        if time.monotonic() - self._since > self.staging_max_age_h * _RENEW_FACTOR:
            # the name's time stamp is what other instances' sweeps go by: renew it well
            # before they take this table for one of a dead process
            old = self.table
            self.table = staging_name(self.control_schema)
            self._since = time.monotonic()
            self._columns = None
            self.conn.run(f"DROP TABLE IF EXISTS {ddl.table_ref(old)}", kind="ddl", table=old)
        if not holds(self._columns, prepared.staged):  # else emptied by the last flush
            columns = widened(self._columns, prepared.staged)
            self._columns = None
            self.conn.run(ddl.create_staging(self.table, columns), kind="ddl", table=self.table)
            self._columns = columns
        path, load_id = str(prepared.path), prepared.load_id
        self.conn.run(ddl.put_file(path, self.control_schema, STAGE, load_id), kind="put")

    def copy(self, prepared: StagedFlush) -> None:
        """COPY the staged file into the staging table (inside the flush's transaction)."""
        cur = self.conn.run(
            ddl.copy_into_staging(self.table, self.control_schema, STAGE, prepared.load_id),
            kind="copy",
            table=self.table,
        )
        loaded = sum(int(r[3] or 0) for r in cur.fetchall() if len(r) > 3)
        if loaded != prepared.staged_rows:
            raise WarehouseRetryableError(
                f"COPY INTO {self.table} loaded {loaded} of {prepared.staged_rows} staged rows"
            )

    def empty(self) -> None:
        """Empty the staging table (inside the flush's transaction: the staged rows are never
        written for good, so the emulator's DuckDB never checkpoints them; the saving is in
        bench/results/sink-tuning.md)."""
        self.conn.run(f"DELETE FROM {ddl.table_ref(self.table)}", kind="delete", table=self.table)

    def drop(self) -> None:
        """Drop the staging table (the sink is closing); a failure is only logged."""
        try:
            self.conn.run(f"DROP TABLE IF EXISTS {ddl.table_ref(self.table)}", kind="ddl")
        except SegflowError as exc:
            logger.warning("could not drop staging table %s: %s", self.table, exc)
