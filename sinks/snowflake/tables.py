"""The warehouse layout: which tables exist, their fixed columns and how each is written.

Segment's tables (tracks, one per track event, identifies, users, pages, screens, groups,
accounts, aliases) plus segflow's own: identity_map, audit_log, _segflow_schema_changes (per
source schema) and _segflow_offsets (in the control schema). Column names are snake_case here;
the SQL layer upper-cases and quotes them, which is what unquoted names resolve to in Snowflake.
"""

from __future__ import annotations

from enum import StrEnum

from schemas.naming import CONTEXT_PREFIX, OWNED_PREFIX, SEGFLOW_COLUMNS, ReservedColumns

VARCHAR, NUMBER, FLOAT, BOOLEAN, TIMESTAMP, VARIANT = (
    "VARCHAR",
    "NUMBER",
    "FLOAT",
    "BOOLEAN",
    "TIMESTAMP_TZ",
    "VARIANT",
)


class Kind(StrEnum):
    """How rows of a table are written."""

    APPEND = "append"  # events: inserted unless their id is there within the lookback
    MERGE = "merge"  # users, accounts: latest traits per id, older traits kept where absent
    REPLACE = "replace"  # identity_map: the newest link per identifier replaces the old one
    PLAIN = "plain"  # appended as is


USERS = "users"
ACCOUNTS = "accounts"
IDENTITY_MAP = "identity_map"
AUDIT_LOG = "audit_log"
SCHEMA_CHANGES = "_segflow_schema_changes"
OFFSETS = "_segflow_offsets"

# Set by the loader at load time, not carried by the staged rows.
LOAD_TIME_COLUMNS: frozenset[str] = frozenset({"uuid_ts", "loaded_at"})
LOAD_ID_COLUMN = "_segflow_load_id"

_ORIGIN = {"_segflow_topic": VARCHAR, "_segflow_partition": NUMBER, "_segflow_offset": NUMBER}

EVENT_BASE: dict[str, str] = {
    "id": VARCHAR,
    "anonymous_id": VARCHAR,
    "user_id": VARCHAR,
    "canonical_user_id": VARCHAR,
    "received_at": TIMESTAMP,
    "sent_at": TIMESTAMP,
    "original_timestamp": TIMESTAMP,
    "timestamp": TIMESTAMP,
    "uuid_ts": TIMESTAMP,
    "loaded_at": TIMESTAMP,
    "channel": VARCHAR,
    "_masked_fields": VARCHAR,
    "_pii_key_version": VARCHAR,
    "_unmapped": VARIANT,
    **_ORIGIN,
}

_EXTRA: dict[str, dict[str, str]] = {
    "tracks": {"event": VARCHAR, "event_text": VARCHAR},
    "pages": {"name": VARCHAR, "category": VARCHAR},
    "screens": {"name": VARCHAR, "category": VARCHAR},
    "groups": {"group_id": VARCHAR},
    "aliases": {"previous_id": VARCHAR},
    "identifies": {},
}

_PROFILE: dict[str, str] = {
    "id": VARCHAR,
    "received_at": TIMESTAMP,
    "uuid_ts": TIMESTAMP,
    "loaded_at": TIMESTAMP,
    "_unmapped": VARIANT,
    LOAD_ID_COLUMN: VARCHAR,
}

_SPECIAL: dict[str, dict[str, str]] = {
    USERS: _PROFILE,
    ACCOUNTS: _PROFILE,
    IDENTITY_MAP: {
        "identifier": VARCHAR,
        "identifier_type": VARCHAR,
        "canonical_user_id": VARCHAR,
        "source": VARCHAR,
        "message_id": VARCHAR,
        "linked_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        LOAD_ID_COLUMN: VARCHAR,
        **_ORIGIN,
    },
    AUDIT_LOG: {
        "id": VARCHAR,
        "type": VARCHAR,
        "received_at": TIMESTAMP,
        "user_id": VARCHAR,
        "anonymous_id": VARCHAR,
        "canonical_user_id": VARCHAR,
        "payload": VARIANT,
        "loaded_at": TIMESTAMP,
        **_ORIGIN,
    },
    SCHEMA_CHANGES: {
        "detected_at": TIMESTAMP,
        "table_name": VARCHAR,
        "column_name": VARCHAR,
        "change": VARCHAR,
        "column_type": VARCHAR,
        "value_type": VARCHAR,
        "occurrences": NUMBER,
        "example_message_id": VARCHAR,
        # added later (tables made before get them on first use): which stage saw it, the
        # processors' view of it, and an id that makes the load idempotent
        "id": VARCHAR,
        "detected_by": VARCHAR,
        "call_type": VARCHAR,
        "event": VARCHAR,
        "field": VARCHAR,
        "previous_type": VARCHAR,
        "mode": VARCHAR,
        **_ORIGIN,
    },
}

_EVENT_TABLE = {**EVENT_BASE, **_EXTRA["tracks"]}
_FIXED_CACHE: dict[str, dict[str, str]] = {}


def fixed_columns(table: str) -> dict[str, str]:
    """The columns a table always has (per-event tables: like tracks)."""
    cached = _FIXED_CACHE.get(table)
    if cached is not None:
        return cached
    if table in _SPECIAL:
        cols = _SPECIAL[table]
    elif table in _EXTRA:
        cols = {**EVENT_BASE, **_EXTRA[table]}
    else:
        cols = _EVENT_TABLE
    _FIXED_CACHE[table] = cols
    return cols


_RESERVED_CACHE: dict[str, ReservedColumns] = {}


def layout_of(table: str) -> str:
    """The table whose layout `table` has: itself for Segment's and segflow's own tables,
    ``tracks`` for a per-event table."""
    return table if table in _SPECIAL or table in _EXTRA else "tracks"


def reserved_columns(table: str) -> ReservedColumns:
    """The names no property or trait may take on `table`: its fixed columns, the names
    segflow writes anywhere (`schemas.naming.SEGFLOW_COLUMNS`, ``_segflow*``) and, on an event
    table (which holds the event's flattened context), every ``context_*`` name. So a trait
    ``name`` is a column of identifies, groups, users and accounts, while pages and screens
    keep ``name`` and ``category`` for the call's own, and tracks ``event`` and
    ``event_text``."""
    layout = layout_of(table)
    cached = _RESERVED_CACHE.get(layout)
    if cached is None:
        prefixes = (OWNED_PREFIX,) if layout in _SPECIAL else (OWNED_PREFIX, CONTEXT_PREFIX)
        names = frozenset(fixed_columns(layout)) | SEGFLOW_COLUMNS
        cached = _RESERVED_CACHE[layout] = ReservedColumns(names, prefixes)
    return cached


def kind_of(table: str) -> Kind:
    if table in (USERS, ACCOUNTS):
        return Kind.MERGE
    if table == IDENTITY_MAP:
        return Kind.REPLACE
    return Kind.APPEND


# Stages that detect schema changes (`_segflow_schema_changes.detected_by`).
DETECTED_BY_SINK = "sink"
DETECTED_BY_PROCESSORS = "processors"


def lookback_column(table: str) -> str:
    """The time column an APPEND table's idempotence window is measured on."""
    return "detected_at" if table == SCHEMA_CHANGES else "received_at"


def merge_key(table: str) -> tuple[str, ...]:
    """The key a MERGE or REPLACE table is upserted on."""
    if table == IDENTITY_MAP:
        return ("identifier", "identifier_type")
    return ("id",)
