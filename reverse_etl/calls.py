"""Warehouse rows -> Segment identify/track calls, and the row hash the diff compares. Pure.

A row's columns split into the identity columns (userId, anonymousId, the row key, the event
name, group id and timestamp columns) and the rest, which become ``traits`` (identify, group) or
``properties`` (track). A group call carries the row's groupId and, as Segment requires, the
userId or anonymousId of a member. A column name Snowflake upper-cased (an unquoted alias) is
lower-cased; a quoted name keeps its case. VARIANT/OBJECT/ARRAY values arrive as JSON text
and are sent as JSON.

The messageId is derived from the sync, the row key and the row hash, so a row version that is
sent twice (a crash between the send and the state update) is deduplicated downstream.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import orjson

from schemas.markers import CONTEXT_KEY, reverse_etl_context
from schemas.timestamps import to_iso

LIBRARY = {"name": "segflow-reverse-etl", "version": "1"}


@dataclass(frozen=True)
class CallSpec:
    """How rows become calls (from ReverseEtlSettings)."""

    sync_name: str
    call: str
    user_id_column: str
    anonymous_id_column: str
    key_column: str
    event: str | None = None
    event_column: str = "event"
    group_id_column: str = "group_id"
    timestamp_column: str | None = None
    integrations: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RowCall:
    """One row's call, its key and its content hash."""

    key: str
    row_hash: str
    call: dict[str, Any]


class RowSkipped(Exception):
    """A row that cannot become a call; `reason` is a metrics label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def column_name(name: str) -> str:
    """Snowflake's upper-cased unquoted names back to lower case; quoted names as written."""
    return name.lower() if name.isupper() else name


def json_value(value: Any, *, is_json: bool = False) -> Any:
    """A warehouse value as a JSON-ready value."""
    if value is None:
        return None
    if is_json and isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return to_iso(aware)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def row_to_dict(
    columns: Sequence[str], values: Sequence[Any], json_columns: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """One fetched row as {column: JSON-ready value}; `json_columns` hold JSON text."""
    return {
        column_name(c): json_value(v, is_json=c in json_columns)
        for c, v in zip(columns, values, strict=True)
    }


def row_hash(content: Mapping[str, Any]) -> str:
    """A stable hash of what a call says (not when it is sent)."""
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def build_call(spec: CallSpec, row: Mapping[str, Any], sent_at: datetime) -> RowCall:
    """The call of one row. Raises RowSkipped when the row has no key or no identity."""
    key = _text(row.get(spec.key_column))
    if key is None:
        raise RowSkipped("missing_key")
    user_id = _text(row.get(spec.user_id_column))
    anonymous_id = _text(row.get(spec.anonymous_id_column))
    if user_id is None and anonymous_id is None:
        raise RowSkipped("missing_identity")
    reserved = {spec.user_id_column, spec.anonymous_id_column, spec.key_column}
    content: dict[str, Any] = {"type": spec.call}
    if user_id is not None:
        content["userId"] = user_id
    if anonymous_id is not None:
        content["anonymousId"] = anonymous_id
    if spec.call == "track":
        event = spec.event or _text(row.get(spec.event_column))
        if event is None:
            raise RowSkipped("missing_event")
        content["event"] = event
        if spec.event is None:
            reserved.add(spec.event_column)
    elif spec.call == "group":
        group_id = _text(row.get(spec.group_id_column))
        if group_id is None:
            raise RowSkipped("missing_group")
        content["groupId"] = group_id
        reserved.add(spec.group_id_column)
    when = sent_at
    if spec.timestamp_column is not None:
        reserved.add(spec.timestamp_column)
        stamped = row.get(spec.timestamp_column)
        if stamped is not None:
            content["timestamp"] = stamped
    payload = {k: v for k, v in row.items() if k not in reserved}
    content["properties" if spec.call == "track" else "traits"] = payload
    digest = row_hash(content)
    call = dict(content)
    call.setdefault("timestamp", to_iso(when))
    call["messageId"] = "retl-" + row_hash({"s": spec.sync_name, "k": key, "h": digest})
    call["context"] = {"library": LIBRARY, CONTEXT_KEY: reverse_etl_context(spec.sync_name)}
    if spec.integrations:
        call["integrations"] = dict(spec.integrations)
    return RowCall(key=key, row_hash=digest, call=call)


def changed(calls: Sequence[RowCall], synced: Mapping[str, str]) -> list[RowCall]:
    """The calls whose row is new or whose hash differs from the last sync's."""
    return [c for c in calls if synced.get(c.key) != c.row_hash]
