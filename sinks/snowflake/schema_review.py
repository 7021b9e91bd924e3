"""The schema-change review: what the sink and the processors recorded, summed up.

Every source schema holds a `_segflow_schema_changes` table: rows the sink writes (columns
added or widened, misfits, caps reached, promotions) and rows it loads from the processors'
``segment.schema-changes`` topic (new properties, type changes), one row per sighting.
`summarize_changes` groups them by table, column, change, types and the stage that saw them,
with the sum of occurrences, the first and last sighting and one example message id, newest
first, so drift is seen without writing SQL against the control tables.

One query lists the schemas holding such a table (and its columns: a table made by an older
version may lack some, read as NULL); then one grouped query per schema.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sinks.snowflake import ddl
from sinks.snowflake.tables import SCHEMA_CHANGES


class Cursor(Protocol):
    """What `summarize_changes` needs of a DB-API cursor (qmark binds)."""

    def execute(self, sql: str, params: Sequence[Any] | None = ...) -> Any: ...

    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class ChangeSummary:
    """One kind of change of one column, summed over its sightings."""

    schema: str
    table: str
    column: str
    change: str
    column_type: str | None
    value_type: str | None
    detected_by: str | None
    occurrences: int
    first_seen: datetime
    last_seen: datetime
    example_message_id: str | None
    previous_type: str | None = None  # a widening's type before (`column_type` is after)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ISO-8601 UTC)."""
        return {
            "schema": self.schema,
            "table": self.table,
            "column": self.column,
            "change": self.change,
            "column_type": self.column_type,
            "value_type": self.value_type,
            "detected_by": self.detected_by,
            "occurrences": self.occurrences,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "example_message_id": self.example_message_id,
            "previous_type": self.previous_type,
        }


# grouped, in this order; detected_by and previous_type came later (older tables lack them:
# read as NULL)
_GROUPED = (
    "table_name",
    "column_name",
    "change",
    "column_type",
    "value_type",
    "detected_by",
    "previous_type",
)
_REQUIRED = frozenset({"table_name", "column_name", "change", "detected_at"})

_SINCE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> timedelta:
    """``90m``, ``24h``, ``7d`` (also ``s`` and ``w``) -> a timedelta; ValueError naming the
    accepted forms otherwise."""
    match = _SINCE.match(text)
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(
            f"--since {text!r}: expected a positive whole number and a unit, "
            "s, m, h, d or w (e.g. 90m, 24h, 7d)"
        )
    try:
        return timedelta(**{_UNITS[match.group(2).lower()]: int(match.group(1))})
    except OverflowError as exc:
        raise ValueError(f"--since {text!r}: too far back") from exc


def changes_tables_query() -> str:
    """Schemas holding a `_segflow_schema_changes` table, and its columns (no binds)."""
    return (
        "SELECT table_schema, column_name FROM information_schema.columns "
        f"WHERE table_name = '{SCHEMA_CHANGES.upper()}'"
    )


def summary_query(schema: str, columns: frozenset[str], *, since: bool) -> str:
    """One schema's grouped query; binds: the cut-off time when `since`. Columns the table
    lacks (`columns`: its lower-case column names) are read as NULL."""

    def col(name: str) -> str:
        return ddl.quote(name) if name in columns else "NULL"

    grouped = ", ".join(col(c) for c in _GROUPED)
    occurrences = (
        f"SUM(COALESCE({col('occurrences')}, 1))" if "occurrences" in columns else ("COUNT(*)")
    )
    example = col("example_message_id")
    where = ' WHERE "DETECTED_AT" >= CAST(? AS TIMESTAMP_TZ)' if since else ""
    return (
        f'SELECT {grouped}, {occurrences}, MIN("DETECTED_AT"), MAX("DETECTED_AT"), '
        f"MAX({example}) FROM {ddl.qualified(schema, SCHEMA_CHANGES)}{where} "
        f"GROUP BY {', '.join(str(i) for i in range(1, len(_GROUPED) + 1))}"
    )


def changes_tables(rows: Sequence[Sequence[Any]]) -> dict[str, frozenset[str]]:
    """(schema, column) rows of `changes_tables_query` -> schema (lower case) -> its columns."""
    out: dict[str, set[str]] = {}
    for schema, column in rows:
        out.setdefault(str(schema).lower(), set()).add(str(column).lower())
    return {s: frozenset(c) for s, c in out.items() if c >= _REQUIRED}


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def summaries(schema: str, rows: Sequence[Sequence[Any]]) -> list[ChangeSummary]:
    """The rows of one schema's `summary_query` as summaries."""
    out = []
    for table, column, change, ctype, vtype, by, previous, n, first, last, example in rows:
        out.append(
            ChangeSummary(
                schema=schema,
                table=str(table),
                column=str(column or ""),
                change=str(change),
                column_type=_text(ctype),
                value_type=_text(vtype),
                detected_by=_text(by),
                occurrences=int(n or 0),
                first_seen=_utc(first),
                last_seen=_utc(last),
                example_message_id=_text(example) or None,
                previous_type=_text(previous),
            )
        )
    return out


def newest_first(items: list[ChangeSummary]) -> list[ChangeSummary]:
    """Most recently seen first; ties by schema, table, column, change."""
    items = sorted(items, key=lambda s: (s.schema, s.table, s.column, s.change))
    return sorted(items, key=lambda s: s.last_seen, reverse=True)


def summarize_changes(
    cursor: Cursor,
    *,
    schemas: list[str] | None = None,
    since: timedelta | None = None,
    now: datetime | None = None,
) -> list[ChangeSummary]:
    """The recorded schema changes of `schemas` (None: every schema holding the table), seen
    within `since` of `now` (None: all), grouped and newest first. A schema asked for that has
    no `_segflow_schema_changes` table contributes nothing."""
    cursor.execute(changes_tables_query())
    found = changes_tables(cursor.fetchall())
    wanted = sorted(found) if schemas is None else [s.lower() for s in schemas]
    binds: list[Any] = []
    if since is not None:
        binds = [((now or datetime.now(UTC)) - since).isoformat()]
    out: list[ChangeSummary] = []
    for schema in wanted:
        columns = found.get(schema)
        if columns is None:
            continue
        cursor.execute(summary_query(schema, columns, since=since is not None), binds or None)
        out += summaries(schema, cursor.fetchall())
    return newest_first(out)
