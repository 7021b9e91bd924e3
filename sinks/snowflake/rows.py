"""Clean events -> rows of Segment's warehouse tables, as pure functions.

One clean event gives one row in its call type's table (tracks, identifies, pages, screens,
groups, aliases), a row in the per-event table for a track, a users/accounts row for identify
and group calls with an id, and an audit_log row holding the full (masked) payload. Context is
flattened into ``context_*`` columns, properties and traits into snake_case columns, named by
`schemas.naming` (every name fits Snowflake's 255 characters). A value that gets no column (its
key normalises to nothing, its column is reserved on the table written: `tables.reserved_columns`,
or an earlier key of the event took it) goes to ``_unmapped`` under its original key path
(``properties.a-b``, see `schemas.naming.unmapped_key`), so no value is dropped or overwritten.
Reserved names are per table: an identify's trait ``name`` fills identifies.name and users.name,
a group's groups.name and accounts.name; a page's property ``name`` stays in ``_unmapped`` (the
page's ``name`` column holds the call's name).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

import orjson

from schemas.naming import (
    NOTHING_RESERVED,
    ReservedColumns,
    child_column,
    event_table_name,
    path_column,
    snake_case,
    unmapped_key,
)
from sinks.snowflake.tables import (
    ACCOUNTS,
    AUDIT_LOG,
    DETECTED_BY_PROCESSORS,
    IDENTITY_MAP,
    SCHEMA_CHANGES,
    USERS,
    Kind,
    kind_of,
    reserved_columns,
)

CALL_TABLES = {
    "track": "tracks",
    "identify": "identifies",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
}
UNKNOWN_SOURCE = "unknown_source"


@dataclass(slots=True)
class TableRow:
    """One row for one table of one source schema. `values` are Python values by column; a
    `bytes` value is a JSON document already (UTF-8, as orjson writes it), loaded as it is."""

    schema: str
    table: str
    kind: Kind
    values: dict[str, Any]
    unmapped: dict[str, Any] | None
    message_id: str
    made_with: TableRow | None = field(default=None, compare=False, repr=False)
    """The first row `event_rows` made of the same event, when this one was made with it (same
    event, same origin). Such a row's ``id`` is its `message_id` and it has an origin
    (first_per_id relies on it). A per-event row made with a tracks row holds the tracks row's
    values with its own appended after them (staging.stage_units relies on it; rows are never
    changed in place: whoever changes one makes a new TableRow, without this link)."""


@dataclass(frozen=True, slots=True)
class Origin:
    topic: str
    partition: int
    offset: int


def schema_name(source: str | None) -> str:
    """The warehouse schema of a source (its snake_case name, fitted)."""
    return snake_case(source or "") or UNKNOWN_SOURCE


def _json_object(text: str | None) -> dict[str, Any]:
    return _json_map(text)[0]


_EMPTY = orjson.Fragment(b"{}")


def _json_map(text: str | None) -> tuple[dict[str, Any], Any]:
    """A free-form map's JSON text -> (the object, the same for a JSON document: the text
    itself as an orjson.Fragment when it is a valid JSON object, so it is not serialized
    again)."""
    if not text or text == "{}":
        return {}, _EMPTY
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = {"_invalid_json": text}
        return value, value
    if type(value) is dict:
        return value, orjson.Fragment(text)
    value = {"_value": value}
    return value, value


# short documents -> their orjson.Fragment: an event's integrations and extra repeat endlessly
_DOCS: dict[str, Any] = {}
_DOCS_MAX = 1024
_DOC_TEXT_MAX = 256


def _json_doc(text: str | None) -> Any:
    """`_json_map(text)[1]` (the JSON document of a map's text), short valid ones remembered."""
    doc = _DOCS.get(text) if text else None
    if doc is None:
        doc = _json_map(text)[1]
        if (
            text
            and type(doc) is orjson.Fragment
            and len(text) <= _DOC_TEXT_MAX
            and len(_DOCS) < _DOCS_MAX
        ):
            _DOCS[text] = doc
    return doc


_SCALARS = frozenset({str, int, float, bool})
_COLUMNS_MAX = 200_000
_column_count = 0

# prefix -> key -> (column, whether the table reserves that name); bounded, names repeat endlessly
_Names = dict[str, dict[str, tuple[str, bool]]]


class _Namer:
    """The column names of one table layout, cached: its reserved set decides `own`."""

    __slots__ = ("columns", "reserved")

    def __init__(self, reserved: ReservedColumns) -> None:
        self.reserved = reserved
        self.columns: _Names = {}


def _column(namer: _Namer, prefix: str, key: str) -> tuple[str, bool]:
    """The column of `key` under `prefix` (``""``: none), as schemas.naming.flatten names it,
    and whether the namer's table reserves that name (cached)."""
    global _column_count
    by_key = namer.columns.get(prefix)
    cached = by_key.get(key) if by_key is not None else None
    if cached is None:
        column = child_column(prefix, key)
        cached = (column, column in namer.reserved)
        if _column_count < _COLUMNS_MAX:
            namer.columns.setdefault(prefix, {})[key] = cached
            _column_count += 1
    return cached


def _namer(table: str) -> _Namer:
    return _Namer(reserved_columns(table))


# One namer per table layout a map is spread into; the context's columns are all context_*,
# which only an earlier key of the same context can take (nothing is reserved for them).
_CONTEXT_NAMER = _Namer(NOTHING_RESERVED)
_EVENT_NAMER = _namer("tracks")
_CALL_NAMERS = {
    "page": _namer("pages"),
    "screen": _namer("screens"),
    "identify": _namer("identifies"),
    "group": _namer("groups"),
}
_PROFILE_NAMERS = {"identify": _namer(USERS), "group": _namer(ACCOUNTS)}


# A key path as a chain of (parent, key) pairs, the root's parent None: a nested object costs
# one pair, and the path is spelled out only for a value that goes to `_unmapped`.
_Path = tuple[Any, str]


def _unmapped_key(path: _Path, key: str) -> str:
    keys = [str(key)]
    node: _Path | None = path
    while node is not None:
        keys.append(node[1])
        node = node[0]
    return unmapped_key(reversed(keys))


def _spread(
    target: dict[str, Any],
    obj: dict[str, Any],
    prefix: str,
    unmapped: dict[str, Any],
    path: _Path,
    namer: _Namer,
) -> None:
    """Flatten `obj`, found at `path` of its event (``(None, "properties")``), into `target`,
    a row of the table `namer` names for: schemas.naming.flatten's rules without a generator
    per level. A value without a column of its own (empty name, a name the table reserves, a
    name already in `target`) goes to `unmapped`, as it is, under its key path."""
    by_key = namer.columns.get(prefix) or {}
    for key, value in obj.items():
        if value is None:
            continue
        entry = by_key.get(key)
        column, own = entry if entry is not None else _column(namer, prefix, str(key))
        if not column:
            unmapped[_unmapped_key(path, key)] = value
            continue
        if type(value) not in _SCALARS:
            if isinstance(value, dict):
                _spread(target, value, column, unmapped, (path, key), namer)
                continue
            if not (own or column in target) and isinstance(value, list | tuple):
                target[column] = orjson.dumps(value).decode()
                continue
        if own or column in target:
            unmapped[_unmapped_key(path, key)] = value
        else:
            target[column] = value


_CONTEXT: _Path = (None, "context")

# context text -> (its context_* columns and values, its JSON document), for contexts whose
# every value got a column: an SDK, a device or a page sends the same context again and again.
# A context's columns depend on its text only (they are named context_*, which none of the
# call's own columns before them is), so the columns spread once are the columns every time.
# A text is remembered the second time it comes (`_SEEN`): one that never repeats costs a set
# entry, not a copy of its columns.
_CONTEXTS: dict[str, tuple[dict[str, Any], Any]] = {}
_CONTEXTS_MAX = 1024
_SEEN: set[str] = set()
_SEEN_MAX = 4096
_CONTEXT_TEXT_MAX = 4096


def _remember_context(text: str, row: dict[str, Any], ahead: int, doc: Any) -> None:
    """Remember the context columns just spread into `row`, after its `ahead` first columns
    (every value of the context got a column: none went to `_unmapped`), once it repeats."""
    if len(text) > _CONTEXT_TEXT_MAX:
        return
    if text not in _SEEN:
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()  # the traffic moved on: start over
        _SEEN.add(text)
        return
    if len(_CONTEXTS) >= _CONTEXTS_MAX:
        _CONTEXTS.clear()
    _CONTEXTS[text] = (dict(islice(row.items(), ahead, None)), doc)


_PROPERTIES: _Path = (None, "properties")
_TRAITS: _Path = (None, "traits")


def event_rows(record: dict[str, Any], origin: Origin, *, audit: bool) -> list[TableRow]:
    """Every warehouse row of one decoded clean_event record."""
    call = record["type"]
    table = CALL_TABLES.get(call)
    schema = schema_name(record.get("source"))
    mid = record["messageId"]
    masked = record.get("maskedFields") or None
    base: dict[str, Any] = {
        "id": mid,
        "anonymous_id": record.get("anonymousId"),
        "user_id": record.get("userId"),
        "canonical_user_id": record.get("canonicalUserId"),
        "received_at": record["receivedAt"],
        "sent_at": record.get("sentAt"),
        "original_timestamp": record.get("originalTimestamp"),
        "timestamp": record["timestamp"],
        "channel": record.get("channel"),
        "_masked_fields": orjson.dumps(masked).decode() if masked else None,
        "_pii_key_version": record.get("piiKeyVersion"),
        "_segflow_topic": origin.topic,
        "_segflow_partition": origin.partition,
        "_segflow_offset": origin.offset,
    }
    ctx_unmapped: dict[str, Any] = {}
    context_text = record.get("context")
    known = _CONTEXTS.get(context_text) if type(context_text) is str else None
    if known is None:
        context, context_doc = _json_map(context_text)
        ahead = len(base)
        _spread(base, context, "context", ctx_unmapped, _CONTEXT, _CONTEXT_NAMER)
        if context_text and not ctx_unmapped:
            _remember_context(context_text, base, ahead, context_doc)
    else:
        columns, context_doc = known
        base.update(columns)
    unmapped = _json_object(record.get("unmapped"))
    unmapped.update(ctx_unmapped)
    rows: list[TableRow] = []
    payload_maps: dict[str, Any] = {"context": context_doc}

    if call == "track":
        name = record.get("event") or ""
        per_event = event_table_name(name)
        base["event"] = per_event
        base["event_text"] = name
        props, payload_maps["properties"] = _json_map(record.get("properties"))
        tracks = TableRow(schema, "tracks", Kind.APPEND, base, ctx_unmapped or None, mid)
        rows.append(tracks)
        values = dict(base)
        own = dict(unmapped)
        _spread(values, props, "", own, _PROPERTIES, _EVENT_NAMER)
        rows.append(TableRow(schema, per_event, Kind.APPEND, values, own or None, mid, tracks))
    elif call in ("page", "screen"):
        base["name"] = record.get("name")
        base["category"] = record.get("category")
        props, payload_maps["properties"] = _json_map(record.get("properties"))
        _spread(base, props, "", unmapped, _PROPERTIES, _CALL_NAMERS[call])
        rows.append(TableRow(schema, str(table), Kind.APPEND, base, unmapped or None, mid))
    elif call in ("identify", "group"):
        traits, payload_maps["traits"] = _json_map(record.get("traits"))
        profile_id = record.get("userId") if call == "identify" else record.get("groupId")
        if call == "group":
            base["group_id"] = record.get("groupId")
        _spread(base, traits, "", unmapped, _TRAITS, _CALL_NAMERS[call])
        rows.append(TableRow(schema, str(table), Kind.APPEND, base, unmapped or None, mid))
        if profile_id:
            profile: dict[str, Any] = {"id": profile_id, "received_at": record["receivedAt"]}
            own = {}
            _spread(profile, traits, "", own, _TRAITS, _PROFILE_NAMERS[call])
            target = USERS if call == "identify" else ACCOUNTS
            rows.append(TableRow(schema, target, Kind.MERGE, profile, own or None, mid))
    elif call == "alias":
        base["previous_id"] = record.get("previousId")
        rows.append(TableRow(schema, "aliases", Kind.APPEND, base, unmapped or None, mid))
    else:
        unmapped["_call_type"] = call
        rows.append(TableRow(schema, "tracks", Kind.APPEND, base, unmapped, mid))

    if audit:
        row = audit_row(record, origin, schema, payload_maps)
        row.made_with = rows[0]
        rows.append(row)
    return rows


_SPREAD_MAPS = ("properties", "traits", "context")
_OTHER_MAPS = ("integrations", "extra")


def audit_row(
    record: dict[str, Any], origin: Origin, schema: str, maps: dict[str, Any]
) -> TableRow:
    """The audit_log row: the whole masked event as a JSON document, with where it came from.
    `maps` holds the free-form maps the event's table rows were made from (JSON documents or
    orjson Fragments of their text)."""
    payload = dict(record)
    for key in _SPREAD_MAPS:
        payload.pop(key, None)
    for key in _OTHER_MAPS:
        if key in payload:
            payload[key] = _json_doc(payload[key])
    payload["unmapped"] = _json_doc(record.get("unmapped"))
    payload.update(maps)
    values = {
        "id": record["messageId"],
        "type": record["type"],
        "received_at": record["receivedAt"],
        "user_id": record.get("userId"),
        "anonymous_id": record.get("anonymousId"),
        "canonical_user_id": record.get("canonicalUserId"),
        # bytes, not a str subclass: the garbage collector does not track them (nor the row's
        # values with them), and every buffered record's audit row holds one; copied, since
        # the bytes orjson returns keep its whole write buffer (~8 KB) allocated
        "payload": bytes(memoryview(orjson.dumps(payload, default=_default))),
        "_segflow_topic": origin.topic,
        "_segflow_partition": origin.partition,
        "_segflow_offset": origin.offset,
    }
    return TableRow(schema, AUDIT_LOG, Kind.APPEND, values, None, record["messageId"])


def identity_row(link: dict[str, Any], origin: Origin) -> TableRow:
    """The identity_map row of one identity_link record."""
    schema = schema_name(link.get("source"))
    values = {
        "identifier": link["identifier"],
        "identifier_type": link["identifierType"],
        "canonical_user_id": link["canonicalUserId"],
        "source": link.get("source"),
        "message_id": link.get("messageId"),
        "linked_at": link.get("linkedAt"),
        "_segflow_topic": origin.topic,
        "_segflow_partition": origin.partition,
        "_segflow_offset": origin.offset,
    }
    return TableRow(
        schema, IDENTITY_MAP, kind_of(IDENTITY_MAP), values, None, link.get("messageId") or ""
    )


_MAP_ROOTS = ("properties.", "traits.")
_CHANGE_IDS = uuid.UUID("6f1d0c9e-3a51-4a57-9a5e-5c3f7f0b2d11")


def schema_change_row(change: dict[str, Any], origin: Origin) -> TableRow:
    """The `_segflow_schema_changes` row of one schema_change record of the processors (a new
    property or a type change, first seen in event `messageId`). Its id is derived from the
    record's content, so a replayed or re-sent record is loaded once."""
    call = change["callType"]
    event = change.get("event")
    field = change["field"]
    table = event_table_name(event) if call == "track" and event else CALL_TABLES.get(call, call)
    path = next((field[len(r) :] for r in _MAP_ROOTS if field.startswith(r)), field)
    key = "|".join(
        str(change.get(k) or "")
        for k in ("source", "callType", "event", "field", "change", "previousType", "newType")
    )
    mid = change["messageId"]
    values = {
        "id": str(uuid.uuid5(_CHANGE_IDS, f"{key}|{mid}")),
        "detected_at": change["detectedAt"],
        "detected_by": DETECTED_BY_PROCESSORS,
        "table_name": table,
        "column_name": _change_column(table, path),
        "change": change["change"],
        "previous_type": change.get("previousType"),
        "value_type": change["newType"],
        "occurrences": 1,
        "example_message_id": mid,
        "call_type": call,
        "event": event,
        "field": field,
        "mode": change.get("mode"),
        "_segflow_topic": origin.topic,
        "_segflow_partition": origin.partition,
        "_segflow_offset": origin.offset,
    }
    return TableRow(
        schema_name(change.get("source")), SCHEMA_CHANGES, Kind.APPEND, values, None, mid
    )


def _change_column(table: str, path: str) -> str:
    """The column a reported field lands on in `table`: ``_unmapped`` when its name is empty or
    the table reserves it (a page's property ``name``)."""
    column = path_column(path)
    return column if column and column not in reserved_columns(table) else "_unmapped"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


class JsonText(str):
    """A string that already holds a JSON document (loaded into VARIANT as is); the audit
    payload is such a document as `bytes`."""

    __slots__ = ()


def collapse(rows: list[TableRow]) -> list[TableRow]:
    """Rows as one flush writes them: one users/accounts row per id with the latest traits
    (older traits kept where the newer call lacks them), one identity_map row per identifier
    (the last link wins); event rows unchanged, in order."""
    out: list[TableRow] = []
    merged: dict[tuple[str, str, Any], TableRow] = {}
    for row in rows:
        if row.kind is Kind.MERGE:
            key: tuple[str, str, Any] = (row.schema, row.table, row.values["id"])
            prev = merged.get(key)
            if prev is None:
                merged[key] = row
            elif row.values["received_at"] >= prev.values["received_at"]:
                merged[key] = _combine(prev, row)
            else:
                merged[key] = _combine(row, prev)
        elif row.kind is Kind.REPLACE:
            v = row.values
            merged[(row.schema, row.table, (v["identifier"], v["identifier_type"]))] = row
        else:
            out.append(row)
    out.extend(merged.values())
    return out


def _combine(older: TableRow, newer: TableRow) -> TableRow:
    values = {**older.values, **newer.values}
    unmapped = {**(older.unmapped or {}), **(newer.unmapped or {})} or None
    return TableRow(newer.schema, newer.table, newer.kind, values, unmapped, newer.message_id)


def first_per_id(rows: list[TableRow]) -> tuple[list[TableRow], dict[str, int]]:
    """Appended rows as a flush inserts them: one row per table and id, the one of the earliest
    record (by topic, partition, offset), where it stood; a duplicate within the batch (a replay
    overlapping, a re-sent record) is dropped here instead of by the warehouse. An event's rows
    stay together: a later copy that wins replaces each of the earlier copy's rows in place.
    Rows without an id or an origin (the sink's own schema-change rows) are kept as they are.
    Returns the rows and the number dropped per table."""
    out: list[TableRow] = []
    at: dict[tuple[str, str, Any], int] = {}
    dropped: dict[str, int] = {}
    append, first_at, append_kind = out.append, at.setdefault, Kind.APPEND
    for row in rows:
        if row.made_with is None:
            values = row.values
            ident = values.get("id")
            if (
                row.kind is not append_kind
                or ident is None
                or values.get("_segflow_offset") is None
            ):
                append(row)
                continue
        else:  # its id is its message id and it has an origin (TableRow.made_with): no lookups
            ident = row.message_id
            if row.kind is not append_kind or ident is None:
                append(row)
                continue
        n = len(out)
        i = first_at((row.schema, row.table, ident), n)
        if i == n:
            append(row)
        else:
            dropped[row.table] = dropped.get(row.table, 0) + 1
            if _origin(row) < _origin(out[i]):
                out[i] = row
    return out, dropped


def _origin(row: TableRow) -> tuple[str, int, int]:
    v = row.values
    return (str(v["_segflow_topic"]), int(v["_segflow_partition"]), int(v["_segflow_offset"]))
