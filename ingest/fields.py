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


def identifier_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _blank(value: object) -> bool:
    return value is None or (type(value) is str and not value.strip())  # type: ignore[attr-defined]


def optional_datetime(item: dict[str, Any], key: str) -> tuple[bool, datetime | None]:
    value = item.get(key)
    if value is None:
        return True, None
    parsed = _plain_datetime(value)
    return parsed is not None, parsed


def _plain_context(context: dict[str, Any]) -> bool:
    """The context's typed fields have their plain types (one pass over the keys it has)."""
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
    (The checks of the helpers above, inlined: this runs once per event.)
    """
    get = item.get
    call_type = get("type")
    if (
        type(call_type) is not str
        or call_type not in MODEL_BY_TYPE
        or not _SNAKE_NAMES.isdisjoint(item)
    ):
        return None
    message_id = get("messageId")
    if message_id is not None and (type(message_id) is not str or len(message_id) > _MAX_ID):
        return None
    anonymous_id = get("anonymousId")
    user_id = get("userId")
    if anonymous_id is not None and type(anonymous_id) not in _IDENTIFIER_TYPES:
        return None
    if user_id is not None and type(user_id) not in _IDENTIFIER_TYPES:
        return None
    if call_type == "alias":
        previous_id = get("previousId")
        if previous_id is None or user_id is None or type(previous_id) not in _IDENTIFIER_TYPES:
            return None
    elif _blank(user_id) and _blank(anonymous_id):
        return None
    else:
        previous_id = None
    channel = get("channel")
    if channel is not None and type(channel) is not str:
        return None
    context = get("context", _EMPTY)  # absent: fine; an explicit null is refused by the model
    if type(context) is not dict or (context and not _plain_context(context)):
        return None
    if type(get("integrations", _EMPTY)) is not dict:
        return None
    version = get("version")
    if version is not None and type(version) is not int and type(version) is not str:
        return None
    timestamp = get("timestamp")
    if timestamp is not None and (timestamp := _plain_datetime(timestamp)) is None:
        return None
    original = get("originalTimestamp")
    if original is not None and (original := _plain_datetime(original)) is None:
        return None
    sent_at = get("sentAt")
    if sent_at is not None and (sent_at := _plain_datetime(sent_at)) is None:
        return None
    received_at = get("receivedAt")
    if received_at is not None and _plain_datetime(received_at) is None:
        return None
    event = name = category = group_id = None
    if call_type == "track":
        if type(get("properties", _EMPTY)) is not dict:
            return None
        event = get("event")
        if type(event) is not str or not event:
            return None
    elif call_type == "identify":
        if type(get("traits", _EMPTY)) is not dict:
            return None
    elif call_type == "page" or call_type == "screen":
        if type(get("properties", _EMPTY)) is not dict:
            return None
        name, category = get("name"), get("category")
        if (name is not None and type(name) is not str) or (
            category is not None and type(category) is not str
        ):
            return None
    elif call_type == "group":
        if type(get("traits", _EMPTY)) is not dict:
            return None
        group_id = get("groupId")
        if group_id is None or type(group_id) not in _IDENTIFIER_TYPES:
            return None
        group_id = str(group_id)
    # tuple.__new__: the NamedTuple made without its Python-level __new__ (half the cost)
    return _new_tuple(
        EventFields,
        (
            call_type,
            message_id,
            None if anonymous_id is None else str(anonymous_id),
            None if user_id is None else str(user_id),
            None if previous_id is None else str(previous_id),
            group_id,
            event,
            name,
            category,
            timestamp,
            original,
            sent_at,
            channel,
        ),
    )


_new_tuple = tuple.__new__


_IDENTIFIER_TYPES = frozenset({str, int})
_EMPTY: dict[str, Any] = {}
