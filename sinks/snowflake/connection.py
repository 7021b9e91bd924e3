"""The sink's warehouse connection: login, the control schema, statements counted and classified.

`SinkConnection.open` logs in (session.login: the strict check wraps the connection where it
is on), creates the database, the control schema, its stage and `_segflow_offsets`, and sweeps
the staging tables dead processes left behind. `run` executes one statement: counted, timed
(`segflow_sink_statements_total`, `..._statement_duration_seconds`) and any failure classified
(errors.classify). `drop` forgets a connection that is broken or whose session state is unknown;
whatever the other parts cached about the warehouse goes with it (the `on_drop` callback).

Staging tables are named `_segflow_staging_<UTC creation stamp>_<random>` in the control schema:
the stamp is what the sweep judges by (a live process renews its table's name every quarter of
`staging_max_age_h`, stager.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.settings import WarehouseSettings
from schemas.errors import SegflowError
from sinks.snowflake import ddl
from sinks.snowflake.errors import WarehouseRetryableError, classify
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.offsets import OffsetStore
from sinks.snowflake.session import Connect, connect_warehouse, login
from sinks.snowflake.tables import OFFSETS

logger = logging.getLogger(__name__)

STAGE = "_segflow_stage"
STAGING_PREFIX = "_segflow_staging_"


def staging_name(schema: str) -> str:
    """A staging table ("schema.name") stamped with its creation time (sweeps drop old ones)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return ddl.staging_table(schema, f"{STAGING_PREFIX}{stamp}_{uuid.uuid4().hex[:8]}")


def staging_made_at(name: str) -> datetime | None:
    """The creation time in a staging table's name; None if `name` is not one of ours."""
    if not name.upper().startswith(STAGING_PREFIX.upper()):
        return None
    stamp = name[len(STAGING_PREFIX) :].split("_", 1)[0]
    try:
        return datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


class SinkConnection:
    """One warehouse connection of the sink; `run` is the only way statements reach it."""

    def __init__(
        self,
        warehouse: WarehouseSettings,
        control_schema: str,
        offsets: OffsetStore,
        metrics: SinkMetrics,
        *,
        staging_max_age_h: float = 24.0,
        connect: Connect = connect_warehouse,
        on_drop: Callable[[], None] = lambda: None,
    ) -> None:
        self.warehouse = warehouse
        self.control_schema = control_schema
        self.offsets = offsets
        self.metrics = metrics
        self.staging_max_age_h = staging_max_age_h
        """Staging tables older than this are a dead process's: `open` drops them."""
        self.statements = 0
        """Statements run so far (the loader reads it per flush)."""
        self._connect_fn = connect
        self._on_drop = on_drop
        self._conn: Any = None

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def open(self) -> None:
        """Log in, make sure the control schema, stage and offsets exist; sweep old staging."""
        if self._conn is not None:
            return
        self._conn, database = login(
            self.warehouse, "sink", self._connect_fn, self.metrics.strict_violations_of
        )
        try:
            self.run(f"CREATE DATABASE IF NOT EXISTS {ddl.quote(database)}", kind="ddl")
            self.run(f"USE DATABASE {ddl.quote(database)}", kind="session")
            self.run(ddl.create_schema(self.control_schema), kind="ddl")
            self.run(f"USE SCHEMA {ddl.quote(self.control_schema)}", kind="session")
            self.run(ddl.create_stage(self.control_schema, STAGE), kind="ddl")
            self.run(self.offsets.create_sql(), kind="ddl", table=OFFSETS)
            self.sweep_staging()
        except SegflowError:
            self.drop()
            raise

    def drop(self) -> None:
        """Close the connection (errors ignored) and forget what was cached about the session."""
        conn, self._conn = self._conn, None
        self._on_drop()
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing left to do
                logger.debug("closing the warehouse connection failed", exc_info=True)

    def run(
        self, sql: str, binds: Sequence[Any] = (), *, kind: str, table: str | None = None
    ) -> Any:
        """Execute one statement; count it; wrap any failure."""
        if self._conn is None:
            raise WarehouseRetryableError(f"no warehouse connection for {kind}")
        self.statements += 1
        self.metrics.statements.labels(kind).inc()
        started = time.perf_counter()
        try:
            cur = self._conn.cursor()
            cur.execute(sql, list(binds) if binds else None)
        except Exception as exc:
            raise classify(exc, statement=kind, table=table) from exc
        seconds = time.perf_counter() - started
        self.metrics.statement_seconds.labels(kind).observe(seconds)
        logger.debug("%s %s: %.3f s", kind, table or "", seconds)
        return cur

    def offsets_execute(self, sql: str, binds: Sequence[Any]) -> Any:
        """`run` for the OffsetStore (its `Execute`)."""
        return self.run(sql, binds, kind="offsets", table=OFFSETS)

    def sweep_staging(self) -> None:
        """Drop staging tables of processes that died more than `staging_max_age_h` ago (a
        live one renews its table's name every quarter of that age)."""
        # the prefix is matched here: LIKE needs an escape for "_", which the emulator refuses
        cur = self.run(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
            [self.control_schema.upper()],
            kind="select",
        )
        limit = datetime.now(UTC) - timedelta(hours=self.staging_max_age_h)
        for (name,) in cur.fetchall():
            made = staging_made_at(str(name))
            if made is not None and made < limit:
                table = ddl.qualified(self.control_schema, str(name))
                self.run(f"DROP TABLE IF EXISTS {table}", kind="ddl")
