"""The warehouse login every component uses (`login`: the sink's connection, the jobs), and
`WarehouseSession`, one connection for the operator jobs (reverse ETL, deletion, replay, demo).

The real snowflake-connector-python, qmark binds, every failure classified in one place
(sinks.snowflake.errors.classify) so callers see RetryableError or FatalError naming the
statement and table. The database is created when missing, as the sink does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from runtime.settings import WarehouseSettings
from schemas.errors import SegflowError
from sinks.snowflake import strict
from sinks.snowflake.ddl import quote
from sinks.snowflake.errors import classify
from sinks.snowflake.strict import OnViolation

logger = logging.getLogger(__name__)

Connect = Callable[..., Any]


def connect_warehouse(**kwargs: Any) -> Any:
    """snowflake.connector.connect, imported only when a connection is made."""
    import snowflake.connector  # heavy import: only when connecting

    return snowflake.connector.connect(**kwargs)


def login(
    warehouse: WarehouseSettings,
    component: str,
    connect: Connect,
    on_violation: OnViolation | None = None,
) -> tuple[Any, str]:
    """(connection, database): a qmark connection with no database selected yet, since the
    database may have to be created first; login failures classified. With
    `warehouse.strict_checks` (the emulator's default) the connection checks every statement
    against Snowflake's rules (sinks/snowflake/strict.py), reporting refusals to
    `on_violation`."""
    kwargs = warehouse.connect_kwargs(component)
    database = kwargs.pop("database")
    kwargs["paramstyle"] = "qmark"
    kwargs.setdefault("client_session_keep_alive", False)
    try:
        conn = connect(**kwargs)
    except Exception as exc:
        raise classify(exc, statement="login") from exc
    if warehouse.strict_checks:
        conn = strict.wrap(conn, component, on_violation)
    return conn, database


def fetch_pages(
    cur: Any, page_rows: int, *, kind: str = "select", table: str | None = None
) -> Iterator[list[Any]]:
    """A cursor's rows, at most `page_rows` at a time (`fetchmany`: the caller holds one page,
    never the whole result); fetch failures classified as `run`'s are."""
    while True:
        try:
            page = list(cur.fetchmany(page_rows))
        except Exception as exc:
            raise classify(exc, statement=kind, table=table) from exc
        if not page:
            return
        yield page


class WarehouseSession:
    """One connection; `run` executes a statement and wraps any failure."""

    def __init__(
        self,
        warehouse: WarehouseSettings,
        component: str,
        *,
        connect: Connect = connect_warehouse,
        create_database: bool = True,
    ) -> None:
        self.warehouse = warehouse
        self.component = component
        self.database = warehouse.database
        self._connect = connect
        self._create_database = create_database
        self._conn: Any = None
        self.statements = 0

    def open(self) -> WarehouseSession:
        if self._conn is not None:
            return self
        self._conn, _ = login(self.warehouse, self.component, self._connect)
        try:
            if self._create_database:
                self.run(f"CREATE DATABASE IF NOT EXISTS {quote(self.database)}", kind="ddl")
            self.run(f"USE DATABASE {quote(self.database)}", kind="session")
        except SegflowError:
            self.close()
            raise
        return self

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing left to do
                logger.debug("closing the warehouse connection failed", exc_info=True)

    def __enter__(self) -> WarehouseSession:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self, sql: str, binds: Sequence[Any] = (), *, kind: str, table: str | None = None
    ) -> Any:
        """Execute one statement and return its cursor."""
        if self._conn is None:
            self.open()
        self.statements += 1
        try:
            cur = self._conn.cursor()
            cur.execute(sql, list(binds) if binds else None)
            return cur
        except Exception as exc:
            raise classify(exc, statement=kind, table=table) from exc

    def fetch_all(self, sql: str, binds: Sequence[Any] = (), *, kind: str = "select") -> list[Any]:
        return list(self.run(sql, binds, kind=kind).fetchall())

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT; ROLLBACK on any failure (then re-raised)."""
        self.run("BEGIN", kind="transaction")
        try:
            yield
        except BaseException:
            try:
                self.run("ROLLBACK", kind="transaction")
            except SegflowError as exc:
                logger.warning("rollback failed: %s", exc)
            raise
        self.run("COMMIT", kind="transaction")
