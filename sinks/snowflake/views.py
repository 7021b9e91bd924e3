"""`<source>.identified_events`: every event of a source with the user it resolves to today.

One view per source schema over the Segment tables that carry every call (tracks, pages,
screens, identifies, groups, aliases; the per-event tables repeat tracks' rows), joined to
identity_map. Columns:

    id, type (track, page, screen, identify, group, alias), event (a track's event name as
    sent, a page's or screen's name), anonymous_id, user_id, canonical_user_id (the user the
    processors stitched the event to when it passed), resolved_user_id, timestamp,
    received_at, table_name (the table the row is in).

resolved_user_id: the event's identifier (its user_id, else its anonymous_id) looked up in
identity_map, else its canonical_user_id; that user looked up once more (a chain the sink has
not finished: one longer than the hop bound, or an identity map written before chains were
resolved); else its user_id; else NULL (an anonymous visitor never identified). The sink keeps
identity_map final through alias chains (identity_chains.py), and a view reads it at query time,
so rows loaded before a link resolve through it as soon as the link is loaded. Where an
identifier has several rows (one per identifier type), the newest link counts, as in the chain
resolution.

The sink creates the view before a flush's transaction (DDL commits by itself) the first time a
process writes the schema, and again whenever one of those tables or identity_map appears:
`CREATE OR REPLACE VIEW`, idempotent; the SQL is derived from the schema's layout, so columns an
older table lacks read as NULL. A view the warehouse refuses (a role without CREATE VIEW) is
logged as an error and loading goes on: the view serves analysts, the data does not need it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.ddl import qualified, quote
from sinks.snowflake.errors import WarehouseFatalError, WarehouseMisfitError
from sinks.snowflake.tables import IDENTITY_MAP, TIMESTAMP, VARCHAR

logger = logging.getLogger(__name__)

IDENTIFIED_EVENTS = "identified_events"
VIEWS: frozenset[str] = frozenset({IDENTIFIED_EVENTS})
"""The views the sink makes in a source schema (no rows are loaded into them)."""

#: table -> call type, in the order the view unions them
EVENT_TABLES: dict[str, str] = {
    "tracks": "track",
    "pages": "page",
    "screens": "screen",
    "identifies": "identify",
    "groups": "group",
    "aliases": "alias",
}

# column -> its type, for the NULL a table without it reads as
_COLUMNS: dict[str, str] = {
    "id": VARCHAR,
    "anonymous_id": VARCHAR,
    "user_id": VARCHAR,
    "canonical_user_id": VARCHAR,
    "timestamp": TIMESTAMP,
    "received_at": TIMESTAMP,
}
_EVENT_NAME = {"tracks": ("event_text", "event"), "pages": ("name",), "screens": ("name",)}
# Same order as identity_chains._newer: a link before a row naming itself, newest linked_at
_NEWEST_LINK = (
    'CASE WHEN "CANONICAL_USER_ID" = "IDENTIFIER" THEN 1 ELSE 0 END, '
    '"LINKED_AT" DESC NULLS LAST, "IDENTIFIER_TYPE" DESC, "CANONICAL_USER_ID" DESC'
)


def _event_select(schema: str, table: str, columns: Mapping[str, str]) -> str:
    def col(name: str) -> str:
        return quote(name) if name in columns else f"NULL::{_COLUMNS[name]}"

    names = [quote(n) for n in _EVENT_NAME.get(table, ()) if n in columns]
    if not names:
        event = "NULL::VARCHAR"
    elif len(names) == 1:
        event = f"{names[0]}::VARCHAR"
    else:
        event = f"COALESCE({', '.join(names)})::VARCHAR"
    return (
        f'SELECT {col("id")} AS "ID", \'{EVENT_TABLES[table]}\' AS "TYPE", '
        f'{event} AS "EVENT", {col("anonymous_id")} AS "ANONYMOUS_ID", '
        f'{col("user_id")} AS "USER_ID", {col("canonical_user_id")} AS "CANONICAL_USER_ID", '
        f'{col("timestamp")} AS "TIMESTAMP", {col("received_at")} AS "RECEIVED_AT", '
        f"'{table}' AS \"TABLE_NAME\" FROM {qualified(schema, table)}"
    )


def identified_events_sql(schema: str, layout: Mapping[str, Mapping[str, str]]) -> str | None:
    """CREATE OR REPLACE VIEW of the schema's identified_events over the tables `layout` (table
    -> column -> type, lower case) holds; None while it holds none of the event tables."""
    parts = [_event_select(schema, t, layout[t]) for t in EVENT_TABLES if t in layout]
    if not parts:
        return None
    events = " UNION ALL ".join(parts)
    cols = (
        'e."ID", e."TYPE", e."EVENT", e."ANONYMOUS_ID", e."USER_ID", e."CANONICAL_USER_ID", '
        '{resolved} AS "RESOLVED_USER_ID", '
        'e."TIMESTAMP", e."RECEIVED_AT", e."TABLE_NAME"'
    )
    head = f"CREATE OR REPLACE VIEW {qualified(schema, IDENTIFIED_EVENTS)} AS "
    if IDENTITY_MAP not in layout:
        resolved = 'COALESCE(e."CANONICAL_USER_ID", e."USER_ID")'
        return f'{head}WITH "EVENTS" AS ({events}) SELECT {cols.format(resolved=resolved)} ' + (
            'FROM "EVENTS" e'
        )
    resolved = (
        'COALESCE(c."CANONICAL_USER_ID", k."CANONICAL_USER_ID", e."CANONICAL_USER_ID", e."USER_ID")'
    )
    identities = (
        f'SELECT "IDENTIFIER", "CANONICAL_USER_ID" FROM {qualified(schema, IDENTITY_MAP)} '
        'WHERE "CANONICAL_USER_ID" IS NOT NULL '
        f'QUALIFY ROW_NUMBER() OVER (PARTITION BY "IDENTIFIER" ORDER BY {_NEWEST_LINK}) = 1'
    )
    return (
        f'{head}WITH "EVENTS" AS ({events}), "IDENTITIES" AS ({identities}) '
        f"SELECT {cols.format(resolved=resolved)} "
        'FROM "EVENTS" e LEFT JOIN "IDENTITIES" k '
        'ON k."IDENTIFIER" = COALESCE(e."USER_ID", e."ANONYMOUS_ID") '
        'LEFT JOIN "IDENTITIES" c '
        'ON c."IDENTIFIER" = COALESCE(k."CANONICAL_USER_ID", e."CANONICAL_USER_ID")'
    )


class IdentityViews:
    """Keeps each source schema's identified_events in step with its tables."""

    def __init__(self, conn: SinkConnection) -> None:
        self.conn = conn
        self._made: dict[str, str] = {}  # schema -> the view SQL run last in this session

    def reset(self) -> None:
        """Make the views again (a new session: the warehouse may have changed meanwhile)."""
        self._made.clear()

    def ensure(self, schema: str, layout: Mapping[str, Mapping[str, str]] | None) -> bool:
        """(Re)create the schema's view if its tables changed since; True if it ran DDL."""
        sql = identified_events_sql(schema, layout or {})
        if sql is None or self._made.get(schema) == sql:
            return False
        self._made[schema] = sql  # tried once per session, made or not
        try:
            self.conn.run(sql, kind="ddl", table=IDENTIFIED_EVENTS)
        except (WarehouseFatalError, WarehouseMisfitError) as exc:
            # the view serves analysts; loading goes on without it (retried in a new session)
            logger.error(
                "could not make the view %s.%s, loading goes on without it (does the sink's "
                "role have CREATE VIEW on the schema?): %s",
                schema,
                IDENTIFIED_EVENTS,
                exc,
            )
            return False
        logger.info("view %s.%s made", schema, IDENTIFIED_EVENTS)
        return True
