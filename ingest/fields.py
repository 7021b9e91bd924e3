"""The edge's fast path of event validation: plain ``type(...) is ...`` checks that can only
**accept** an event whose fields have the plain shapes it is sure about, and steps aside (None)
for anything else, so the pydantic models of ``schemas/segment.py`` decide. Checked against the
models on a corpus of cases by tests/unit/ingest/test_validation.py; used by
``ingest.validation.validate_event``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple

from schemas.segment import MAX_MESSAGE_ID_LENGTH, MODEL_BY_TYPE

# ISO-8601 shapes the fast path parses itself; anything else goes to pydantic.
_PLAIN_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)?")
# Python field names that pydantic also accepts (populate_by_name): leave those to the model.
_SNAKE_NAMES = frozenset(
    {
        "message_id",
        "anonymous_id",
        "user_id",
        "original_timestamp",
        "sent_at",
        "received_at",
        "group_id",
        "previous_id",
    }
)
_CONTEXT_STR = ("ip", "locale", "timezone", "userAgent", "groupId")
_CONTEXT_DICT = (
    "app",
    "device",
    "location",
    "network",
    "os",
    "page",
    "referrer",
    "screen",
    "traits",
)
_CONTEXT_MODELS = {
    "campaign": ("name", "source", "medium", "term", "content"),
    "library": ("name", "version"),
}
_CONTEXT_SNAKE = frozenset({"group_id", "user_agent"})
_SNAKE = object()  # a Python field name pydantic also accepts: left to the model
# the type each typed context field must have when not null
_CONTEXT_TYPES: dict[str, Any] = {
    **dict.fromkeys(_CONTEXT_STR, str),
    **dict.fromkeys(_CONTEXT_DICT, dict),
    **dict.fromkeys(_CONTEXT_MODELS, dict),
    **dict.fromkeys(_CONTEXT_SNAKE, _SNAKE),
    "active": bool,
}
_HAS_PROPERTIES = frozenset({"track", "page", "screen"})
_HAS_TRAITS = frozenset({"identify", "group"})
_MAX_ID = MAX_MESSAGE_ID_LENGTH - 1


class EventFields(NamedTuple):
    """The typed core of a valid event; free-form maps stay in the item dict."""

    type: str
    message_id: str | None
    anonymous_id: str | None
    user_id: str | None
    previous_id: str | None
    group_id: str | None
    event: str | None
    name: str | None
    category: str | None
    timestamp: datetime | None
    original_timestamp: datetime | None
    sent_at: datetime | None
    channel: str | None


def _plain_datetime(value: object) -> datetime | None:
    """A datetime for a plain ISO-8601 string; None when pydantic should decide."""
    if type(value) is str and _PLAIN_DATETIME.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _is_identifier(value: object) -> bool:
    cls = type(value)
    return cls is str or cls is int


def identifier_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _blank(value: object) -> bool:
    return value is None or (type(value) is str and not value.strip())  # type: ignore[attr-defined]


def _optional_str(item: dict[str, Any], key: str) -> bool:
    value = item.get(key)
    return value is None or type(value) is str


def optional_datetime(item: dict[str, Any], key: str) -> tuple[bool, datetime | None]:
    value = item.get(key)
    if value is None:
        return True, None
    parsed = _plain_datetime(value)
    return parsed is not None, parsed


def _plain_context(context: object) -> bool:
    """The context's typed fields have their plain types (one pass over the keys it has)."""
    if context is None:
        return True  # absent; an explicit null is refused by the model (checked by the caller)
    if type(context) is not dict:
        return False
    for key, value in context.items():
        kind = _CONTEXT_TYPES.get(key)
        if kind is None:
            continue  # a free-form key
        if kind is _SNAKE:
            return False
        if value is None:
            continue  # a typed field left empty
        if type(value) is not kind:
            return False
        fields = _CONTEXT_MODELS.get(key)
        if fields is not None:
            for name in fields:
                sub = value.get(name)
                if sub is not None and type(sub) is not str:
                    return False
    return True


# ---------------------------------------------------------------------------- events


def fast_fields(item: dict[str, Any]) -> EventFields | None:
    """Fields of an event whose every value has the plain shape; None: let pydantic decide.

    Only ever returns fields for an event the pydantic model accepts with the same values.
    """
    call_type = item.get("type")
    if (
        type(call_type) is not str
        or call_type not in MODEL_BY_TYPE
        or not _SNAKE_NAMES.isdisjoint(item)
    ):
        return None
    message_id = item.get("messageId")
    if message_id is not None and (type(message_id) is not str or len(message_id) > _MAX_ID):
        return None
    anonymous_id = item.get("anonymousId")
    user_id = item.get("userId")
    if anonymous_id is not None and not _is_identifier(anonymous_id):
        return None
    if user_id is not None and not _is_identifier(user_id):
        return None
    if call_type == "alias":
        previous_id = item.get("previousId")
        if previous_id is None or user_id is None or not _is_identifier(previous_id):
            return None
    elif _blank(user_id) and _blank(anonymous_id):
        return None
    else:
        previous_id = None
    if not (_optional_str(item, "channel") and _plain_context(item.get("context"))):
        return None
    if "context" in item and item["context"] is None:
        return None
    integrations = item.get("integrations", _EMPTY)
    if type(integrations) is not dict:
        return None
    version = item.get("version")
    if version is not None and type(version) is not int and type(version) is not str:
        return None
    ok_ts, timestamp = optional_datetime(item, "timestamp")
    ok_ot, original = optional_datetime(item, "originalTimestamp")
    ok_sa, sent_at = optional_datetime(item, "sentAt")
    ok_ra, _ = optional_datetime(item, "receivedAt")
    if not (ok_ts and ok_ot and ok_sa and ok_ra):
        return None
    event = name = category = group_id = None
    if call_type in _HAS_PROPERTIES and type(item.get("properties", _EMPTY)) is not dict:
        return None
    if call_type in _HAS_TRAITS and type(item.get("traits", _EMPTY)) is not dict:
        return None
    if call_type == "track":
        event = item.get("event")
        if type(event) is not str or not event:
            return None
    elif call_type == "page" or call_type == "screen":
        name, category = item.get("name"), item.get("category")
        if (name is not None and type(name) is not str) or (
            category is not None and type(category) is not str
        ):
            return None
    elif call_type == "group":
        group_id = item.get("groupId")
        if group_id is None or not _is_identifier(group_id):
            return None
    return EventFields(
        call_type,
        message_id,
        identifier_text(anonymous_id),
        identifier_text(user_id),
        identifier_text(previous_id),
        identifier_text(group_id),
        event,
        name,
        category,
        timestamp,
        original,
        sent_at,
        item.get("channel"),
    )


_EMPTY: dict[str, Any] = {}
