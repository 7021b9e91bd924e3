"""From a validated Segment call to the raw_event record of DESIGN.md: pure functions.

Rules, as Segment applies them:

- Batch defaults: the batch-level ``context`` and ``integrations`` are merged into each item,
  one level deep, the item's own keys winning (``{**batch.context, **item.context}``). An item
  without ``sentAt`` takes the batch's.
- ``messageId``: kept when given (validation refuses 100 characters or more), generated otherwise.
- Time: ``receivedAt`` is the edge's clock when the request arrived (one value per request). The
  client's own time (``originalTimestamp`` if sent, else ``timestamp``) is kept as
  ``originalTimestamp``, and ``timestamp = receivedAt - (sentAt - originalTimestamp)`` corrects
  the client's clock skew (schemas.timestamps.corrected_timestamp). Events relayed by Segment's
  Webhooks destination were corrected by Segment already: there ``timestamp`` is kept as sent.
- Free-form maps travel as JSON strings. Top-level fields the record has no column for (for
  example ``version``, ``_metadata``, a ``name`` on a track, Segment's own ``receivedAt`` on a
  webhook event) go to ``extra`` so nothing is lost; a client's ``receivedAt`` is replaced by the
  edge's, and the ``writeKey`` (a credential) is never stored.
- ``context.ip``: an event without one gets the address of the client that sent the request
  (ingest/client_ip.py), as Segment and RudderStack do, on every event of a batch. A ``context``
  that has the key ``ip`` keeps it, whatever its value: an address the client chose, or
  ``null`` (or a placeholder such as ``"0.0.0.0"``) for a client that does not want its address
  recorded. Events relayed by the Webhooks destination are not filled (the sender is Segment,
  not the user's device). The processors' PII rules then apply (the default rules truncate it).
- Key: the most anonymous identifier (alias: previousId, else anonymousId, else userId).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from orjson import dumps

from ingest.rejections import ItemProblem
from ingest.validation import EventFields
from schemas.timestamps import corrected_timestamp

_COMMON = frozenset(
    {
        "type",
        "messageId",
        "anonymousId",
        "userId",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "context",
        "integrations",
        "channel",
        "writeKey",
    }
)
# Top-level keys that become record fields (or are dropped), per call type.
MAPPED: dict[str, frozenset[str]] = {
    "track": _COMMON | {"event", "properties"},
    "identify": _COMMON | {"traits"},
    "page": _COMMON | {"name", "category", "properties"},
    "screen": _COMMON | {"name", "category", "properties"},
    "group": _COMMON | {"groupId", "traits"},
    "alias": _COMMON | {"previousId"},
}
# Field names pydantic also accepts in place of the camelCase alias (populate_by_name).
_SNAKE_ALIAS = {
    "message_id": "messageId",
    "anonymous_id": "anonymousId",
    "user_id": "userId",
    "original_timestamp": "originalTimestamp",
    "sent_at": "sentAt",
    "group_id": "groupId",
    "previous_id": "previousId",
    "received_at": "receivedAt",
}
_EMPTY_JSON = "{}"


def new_message_id() -> str:
    """A messageId for an event that came without one."""
    return f"segflow-{uuid.uuid4()}"


def merge_defaults(
    item: dict[str, Any],
    context: dict[str, Any] | None,
    integrations: dict[str, Any] | None,
) -> dict[str, Any]:
    """Merge batch-level context/integrations into `item` (in place; item keys win)."""
    if context:
        own = item.get("context")
        if own is None and "context" not in item:
            item["context"] = context
        elif type(own) is dict:
            item["context"] = {**context, **own}
    if integrations:
        own = item.get("integrations")
        if own is None and "integrations" not in item:
            item["integrations"] = integrations
        elif type(own) is dict:
            item["integrations"] = {**integrations, **own}
    return item


def utc(value: datetime | None) -> datetime | None:
    """Aware UTC; naive datetimes are taken as UTC (as schemas.timestamps does)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.utcoffset():
        return value.astimezone(UTC)
    return value


def extra_fields(
    item: dict[str, Any], call_type: str, keep_received_at: bool = False
) -> dict[str, Any]:
    """Top-level fields with no record column (see the module docstring).

    A client's ``receivedAt`` is dropped (the edge sets its own), except on webhook events,
    where it is Segment's own receipt time and is kept.
    """
    mapped = MAPPED[call_type]
    if mapped.issuperset(item):
        return {}  # the common case, checked at C speed
    extra = {}
    for key, value in item.items():
        if key in mapped:
            continue
        camel = _SNAKE_ALIAS.get(key)
        if (
            camel is not None
            and camel not in item
            and (camel in mapped or (camel == "receivedAt" and not keep_received_at))
        ):
            continue  # pydantic took this value for the camelCase field
        if key == "receivedAt" and not keep_received_at:
            continue  # the edge sets receivedAt
        extra[key] = value
    return extra


def to_raw_record(
    item: dict[str, Any],
    fields: EventFields,
    source: str,
    received_at: datetime,
    batch_sent_at: datetime | None = None,
    *,
    trust_timestamp: bool = False,
    client_ip: str | None = None,
) -> dict[str, Any]:
    """The raw_event (v2) record of one validated event. `received_at` must be aware UTC.

    `client_ip`: the request's client, set as ``context.ip`` when the event has none.
    """
    call_type = fields.type
    # utc() inlined for the usual case: datetimes parsed from "Z" or "+00:00" carry UTC itself
    sent_at = fields.sent_at
    if sent_at is None:
        sent_at = batch_sent_at
    elif sent_at.tzinfo is not UTC:
        sent_at = utc(sent_at)
    original = fields.original_timestamp
    if original is not None and original.tzinfo is not UTC:
        original = utc(original)
    if trust_timestamp:
        timestamp = fields.timestamp
        if timestamp is None:
            timestamp = received_at
        elif timestamp.tzinfo is not UTC:
            timestamp = utc(timestamp)
    else:
        if original is None:  # the client's own time: originalTimestamp, else timestamp
            original = fields.timestamp
            if original is not None and original.tzinfo is not UTC:
                original = utc(original)
        timestamp = corrected_timestamp(received_at, sent_at, original)
    get = item.get
    if call_type == "track" or call_type == "page" or call_type == "screen":
        properties = get("properties")
        properties_json = _EMPTY_JSON if properties is None else dumps(properties).decode()
        traits_json = _EMPTY_JSON
    elif call_type == "identify" or call_type == "group":
        traits = get("traits")
        traits_json = _EMPTY_JSON if traits is None else dumps(traits).decode()
        properties_json = _EMPTY_JSON
    else:
        properties_json = traits_json = _EMPTY_JSON
    mapped = MAPPED[call_type]
    extra = {} if mapped.issuperset(item) else extra_fields(item, call_type, trust_timestamp)
    context = get("context")
    if client_ip is not None:  # a new dict: the batch's context may be shared by all items
        if context is None:
            context = {"ip": client_ip}
        elif type(context) is dict and "ip" not in context:
            context = {**context, "ip": client_ip}
    integrations = get("integrations")
    return {
        "type": call_type,
        "messageId": fields.message_id or new_message_id(),
        "source": source,
        "anonymousId": fields.anonymous_id,
        "userId": fields.user_id,
        "previousId": fields.previous_id,
        "groupId": fields.group_id,
        "event": fields.event,
        "name": fields.name,
        "category": fields.category,
        "receivedAt": received_at,
        "sentAt": sent_at,
        "originalTimestamp": original,
        "timestamp": timestamp,
        "properties": properties_json,
        "traits": traits_json,
        "context": _EMPTY_JSON if context is None else dumps(context).decode(),
        "integrations": _EMPTY_JSON if integrations is None else dumps(integrations).decode(),
        "channel": fields.channel,
        "extra": dumps(extra).decode() if extra else _EMPTY_JSON,
    }


def record_or_problem(
    item: dict[str, Any],
    fields: EventFields,
    index: int,
    source: str,
    received_at: datetime,
    batch_sent_at: datetime | None,
    *,
    trust_timestamp: bool = False,
    client_ip: str | None = None,
) -> dict[str, Any] | ItemProblem:
    """to_raw_record, with times that cannot be represented reported as the item's problem."""
    try:
        return to_raw_record(
            item,
            fields,
            source,
            received_at,
            batch_sent_at,
            trust_timestamp=trust_timestamp,
            client_ip=client_ip,
        )
    except (OverflowError, ValueError) as exc:
        return time_problem(index, exc)


def time_problem(index: int, exc: OverflowError | ValueError) -> ItemProblem:
    """The item's problem when to_raw_record cannot represent its times."""
    return ItemProblem(index, "invalid_timestamp", f"timestamps out of range: {exc}", "timestamp")


def record_key(record: dict[str, Any]) -> bytes:
    """The Kafka key: the most anonymous identifier the event carries."""
    if record["type"] == "alias" and record["previousId"]:
        return str(record["previousId"]).encode()
    anonymous = record["anonymousId"]
    if anonymous and anonymous.strip():
        return anonymous.encode()
    user = record["userId"]
    return user.encode() if user else b""


def key_of(fields: EventFields) -> bytes:
    """record_key of the record made from `fields` (the record's identifiers are theirs)."""
    if fields.type == "alias" and fields.previous_id:
        return fields.previous_id.encode()
    anonymous = fields.anonymous_id
    if anonymous and anonymous.strip():
        return anonymous.encode()
    user = fields.user_id
    return user.encode() if user else b""
