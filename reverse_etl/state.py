"""What each sync last sent, kept in the warehouse: ``_segflow_reverse_etl_state``.

One row per (sync_name, row_key): the hash of the row version last accepted by the API and when.
A sync loads its rows at the start and, after every accepted request, replaces the rows of that
request's keys in one transaction (staged as Parquet, PUT, COPY, DELETE ... USING + INSERT),
so an interrupted sync resends only what was not yet accepted.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from reverse_etl.calls import RowCall
from schemas.errors import SegflowError
from sinks.snowflake import ddl
from sinks.snowflake.session import WarehouseSession

logger = logging.getLogger(__name__)

STATE_TABLE = "_segflow_reverse_etl_state"
STAGE = "_segflow_reverse_etl_stage"
COLUMNS = {
    "sync_name": "VARCHAR",
    "row_key": "VARCHAR",
    "row_hash": "VARCHAR",
    "synced_at": "TIMESTAMP_TZ",
}

_STAGED = {"sync_name": "VARCHAR", "row_key": "VARCHAR", "row_hash": "VARCHAR"}


def upsert_statements(schema: str, staging: str) -> tuple[str, str]:
    """DELETE the staged keys' old rows, INSERT the staged rows (bind: synced_at)."""
    state = ddl.qualified(schema, STATE_TABLE)
    stg = ddl.quote(staging)
    delete = (
        f"DELETE FROM {state} USING {stg} "
        f'WHERE {state}."SYNC_NAME" = {stg}."SYNC_NAME" AND {state}."ROW_KEY" = {stg}."ROW_KEY"'
    )
    insert = (
        f'INSERT INTO {state} ("SYNC_NAME", "ROW_KEY", "ROW_HASH", "SYNCED_AT") '
        f'SELECT "SYNC_NAME", "ROW_KEY", "ROW_HASH", CAST(? AS TIMESTAMP_TZ) FROM {stg}'
    )
    return delete, insert


class SyncState:
    """The state table of one schema, read and written through a WarehouseSession."""

    def __init__(
        self, session: WarehouseSession, schema: str, *, stage_dir: str | None = None
    ) -> None:
        self.session = session
        self.schema = schema
        self._stage_dir = Path(stage_dir or tempfile.gettempdir())
        self._staging = f"_segflow_retl_staging_{uuid.uuid4().hex[:12]}"
        self._ready = False

    def ensure(self) -> None:
        if self._ready:
            return
        run = self.session.run
        run(ddl.create_schema(self.schema), kind="ddl")
        run(ddl.create_table(self.schema, STATE_TABLE, COLUMNS), kind="ddl", table=STATE_TABLE)
        run(ddl.create_stage(self.schema, STAGE), kind="ddl")
        self._ready = True

    def load(self, sync_name: str) -> dict[str, str]:
        """row_key -> row_hash of everything the sync has sent."""
        self.ensure()
        cur = self.session.run(
            f'SELECT "ROW_KEY", "ROW_HASH" FROM {ddl.qualified(self.schema, STATE_TABLE)} '
            'WHERE "SYNC_NAME" = ?',
            [sync_name],
            kind="select",
            table=STATE_TABLE,
        )
        out: dict[str, str] = {}
        while True:
            rows = cur.fetchmany(50_000)
            if not rows:
                return out
            out.update((str(k), str(h)) for k, h in rows)

    def save(self, sync_name: str, calls: Sequence[RowCall], synced_at: datetime) -> None:
        """Record that `calls` were accepted (replacing older hashes of the same keys)."""
        if not calls:
            return
        self.ensure()
        run = self.session.run
        folder = f"retl-{uuid.uuid4().hex}"
        path = self._stage_dir / f"segflow-{folder}.parquet"
        table = pa.table(
            {
                "SYNC_NAME": pa.array([sync_name] * len(calls), pa.string()),
                "ROW_KEY": pa.array([c.key for c in calls], pa.string()),
                "ROW_HASH": pa.array([c.row_hash for c in calls], pa.string()),
            }
        )
        pq.write_table(table, path)
        try:
            run(f"USE SCHEMA {ddl.quote(self.schema)}", kind="session")
            run(
                ddl.create_staging(self._staging, _STAGED),
                kind="ddl",
                table=self._staging,
            )
            run(ddl.put_file(str(path), self.schema, STAGE, folder), kind="put")
            run(
                ddl.copy_into_staging(self._staging, self.schema, STAGE, folder),
                kind="copy",
                table=self._staging,
            )
            delete, insert = upsert_statements(self.schema, self._staging)
            with self.session.transaction():
                run(delete, kind="delete", table=STATE_TABLE)
                run(insert, [synced_at.isoformat()], kind="insert", table=STATE_TABLE)
        finally:
            if path.exists():
                os.unlink(path)
            try:
                self.session.run(
                    f"DROP TABLE IF EXISTS {ddl.qualified(self.schema, self._staging)}",
                    kind="ddl",
                )
            except SegflowError as exc:  # never hide the error that got us here
                logger.warning("could not drop staging table %s: %s", self._staging, exc)

    def forget_sync(self, sync_name: str) -> int:
        """Drop a sync's state (the next run sends every row again). Returns rows removed."""
        self.ensure()
        cur = self.session.run(
            f'DELETE FROM {ddl.qualified(self.schema, STATE_TABLE)} WHERE "SYNC_NAME" = ?',
            [sync_name],
            kind="delete",
            table=STATE_TABLE,
        )
        return int(cur.rowcount or 0)
