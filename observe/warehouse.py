"""What the warehouse says of the pipeline: the last load of each table the sink writes, and
the schema changes recorded lately (sinks.snowflake.schema_review).

Every table the sink loads carries ``loaded_at`` (set at load time) and most ``received_at``:
one INFORMATION_SCHEMA query finds them, then one UNION ALL of MAX() per batch of tables reads
their newest values (Snowflake answers MAX from micro-partition metadata; the emulator scans).
The control schema and the ``_segflow_*`` tables are the sink's own bookkeeping, not data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sinks.snowflake.ddl import qualified

# Tables read per UNION ALL statement: one statement stays short whatever the table count.
TABLES_PER_STATEMENT = 50
LOAD_COLUMN = "LOADED_AT"
EVENT_TIME_COLUMN = "RECEIVED_AT"


class Run(Protocol):
    def __call__(self, sql: str, binds: Sequence[Any] = ..., *, kind: str = ...) -> list[Any]: ...


class Statements(Protocol):
    def run(
        self, sql: str, binds: Sequence[Any] = ..., *, kind: str, table: str | None = ...
    ) -> Any: ...


class SessionCursor:
    """The DB-API cursor `schema_review.summarize_changes` asks for, over a session's `run`
    (so its statements are classified and strict-checked like ours)."""

    def __init__(self, session: Statements) -> None:
        self._session = session
        self._cursor: Any = None

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> SessionCursor:
        self._cursor = self._session.run(sql, params or (), kind="select")
        return self

    def fetchall(self) -> list[Any]:
        return [] if self._cursor is None else list(self._cursor.fetchall())


@dataclass(frozen=True)
class TableLoad:
    """A table's newest load (max loaded_at) and newest event (max received_at)."""

    schema: str
    table: str
    last_load: datetime | None
    newest_event: datetime | None

    def freshness_s(self, now: datetime) -> float | None:
        """Seconds since the newest load; None for a table with no rows."""
        return None if self.last_load is None else max(0.0, (now - self.last_load).total_seconds())

    def to_dict(self, now: datetime) -> dict[str, Any]:
        fresh = self.freshness_s(now)
        return {
            "schema": self.schema,
            "table": self.table,
            "last_load": self.last_load.isoformat() if self.last_load else None,
            "newest_event": self.newest_event.isoformat() if self.newest_event else None,
            "freshness_s": None if fresh is None else round(fresh, 1),
        }


def as_utc(value: Any) -> datetime | None:
    """A warehouse timestamp as an aware UTC datetime (a naive one is taken as UTC)."""
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def loaded_tables_sql() -> str:
    """(schema, table, column) of the load-time and event-time columns. Binds: control schema."""
    return (
        "SELECT table_schema, table_name, column_name FROM information_schema.columns "
        f"WHERE column_name IN ('{LOAD_COLUMN}', '{EVENT_TIME_COLUMN}') "
        "AND table_schema <> 'INFORMATION_SCHEMA' AND table_schema <> ? "
        "ORDER BY table_schema, table_name"
    )


def loaded_tables(rows: Iterable[Sequence[Any]]) -> list[tuple[str, str, bool]]:
    """(schema, table, has received_at) of the tables with a loaded_at column, the sink's own
    ``_segflow_*`` tables left out; names as the warehouse stores them."""
    found: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in rows:
        if str(table).upper().startswith("_SEGFLOW"):
            continue
        found.setdefault((str(schema), str(table)), set()).add(str(column).upper())
    return [
        (schema, table, EVENT_TIME_COLUMN in cols)
        for (schema, table), cols in sorted(found.items())
        if LOAD_COLUMN in cols
    ]


def newest_sql(tables: Sequence[tuple[str, str, bool]]) -> str:
    """One statement: (index, max loaded_at, max received_at) per table of `tables`."""
    parts = []
    for i, (schema, table, has_event_time) in enumerate(tables):
        event = f'MAX("{EVENT_TIME_COLUMN}")' if has_event_time else "NULL"
        parts.append(
            f'SELECT {i} AS i, MAX("{LOAD_COLUMN}") AS l, {event} AS r '
            f"FROM {qualified(schema, table)}"
        )
    return " UNION ALL ".join(parts)


def table_loads(run: Run, control_schema: str) -> list[TableLoad]:
    """The newest load and event of every table the sink loads, in schema and table order."""
    tables = loaded_tables(run(loaded_tables_sql(), [control_schema.upper()], kind="select"))
    out: list[TableLoad] = []
    for start in range(0, len(tables), TABLES_PER_STATEMENT):
        batch = tables[start : start + TABLES_PER_STATEMENT]
        newest = {int(i): (ld, rc) for i, ld, rc in run(newest_sql(batch), kind="select")}
        for i, (schema, table, _) in enumerate(batch):
            last, event = newest.get(i, (None, None))
            out.append(TableLoad(schema.lower(), table.lower(), as_utc(last), as_utc(event)))
    return out
