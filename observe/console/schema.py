"""The schema view: the schema-change review (`sinks.snowflake.schema_review`) as JSON rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from runtime.settings import WarehouseSettings
from sinks.snowflake.schema_review import ChangeSummary, summarize_changes
from sinks.snowflake.session import WarehouseSession

# Rows shown at most: the newest first; the review command (`segflow schema changes`) has all.
ROWS_SHOWN = 500


class _SessionCursor:
    """The DB-API cursor `summarize_changes` expects, over `WarehouseSession.run` (which
    classifies warehouse errors)."""

    def __init__(self, session: WarehouseSession) -> None:
        self._session = session
        self._cursor: Any = None

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        self._cursor = self._session.run(sql, params or (), kind="select")
        return self._cursor

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall()) if self._cursor is not None else []


def change_rows(changes: Sequence[ChangeSummary]) -> list[dict[str, Any]]:
    """JSON rows, timestamps ISO-8601, newest first as given, at most `ROWS_SHOWN`."""
    rows = []
    for change in changes[:ROWS_SHOWN]:
        row = asdict(change)
        rows.append({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()})
    return rows


def read_schema_changes(warehouse: WarehouseSettings, since: timedelta) -> list[dict[str, Any]]:
    """The schema changes and misfits recorded within `since`, from the warehouse."""
    with WarehouseSession(warehouse, "console", create_database=False) as session:
        return change_rows(summarize_changes(_SessionCursor(session), since=since))
