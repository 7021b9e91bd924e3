"""Pydantic v2 models of the Segment spec: the common fields, the six calls, the batch envelope.

These models are the event contract. Field names are Segment's camelCase (``populate_by_name``
allows snake_case in Python). Unknown top-level fields are allowed and kept (Segment tolerates
them); ``properties``, ``traits``, ``context`` and ``integrations`` are free-form objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

MAX_MESSAGE_ID_LENGTH = 100  # Segment refuses messageIds of 100 characters or more
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500

# Limits on the shape of one event (EventLimits): the edge and backfill refuse what exceeds them.
MAX_NESTING_DEPTH = 32  # objects/arrays inside each other, the event object being level 1
# The most max_nesting_depth may be set to: JSON encoding (orjson.dumps) stops at 255 levels,
# and a component may wrap an event in a few levels of its own (a DLQ entry, a batch).
MAX_NESTING_DEPTH_CEILING = 128
MAX_IDENTIFIER_LENGTH = 512  # userId, anonymousId, groupId, previousId (characters)
MAX_NAME_LENGTH = 1024  # track event, page/screen name and category (event names become tables)
MAX_KEY_LENGTH = 512  # one key of any object (keys become column names)
MAX_KEYS_PER_OBJECT = 1000
MAX_KEYS_PER_EVENT = 2000  # keys of all objects of one event together
MAX_CONTEXT_COPY_BYTES = 1024 * 1024  # what copying a batch's context into its events may add
# Integers travel in JSON text inside Avro, but the warehouse and the processors read them as
# 64-bit: larger ones are refused (send them as strings).
MIN_INTEGER = -(2**63)
MAX_INTEGER = 2**63 - 1

CallType = Literal["track", "identify", "page", "screen", "group", "alias"]
# Strict: a bool or a float is not an identifier (pydantic's lax mode would turn true into 1).
Identifier = Annotated[StrictStr | StrictInt, Field()]


@dataclass(frozen=True, slots=True)
class EventLimits:
    """Limits on one event's shape, applied where events are first seen (edge, backfill).

    The byte limits (MAX_EVENT_BYTES, MAX_BATCH_BYTES) are the edge's own settings; these bound
    what fits inside them: nesting, key counts and lengths, identifier and name lengths.
    """

    max_nesting_depth: int = MAX_NESTING_DEPTH
    max_identifier_length: int = MAX_IDENTIFIER_LENGTH
    max_name_length: int = MAX_NAME_LENGTH
    max_key_length: int = MAX_KEY_LENGTH
    max_keys_per_object: int = MAX_KEYS_PER_OBJECT
    max_keys_per_event: int = MAX_KEYS_PER_EVENT
    max_context_copy_bytes: int = MAX_CONTEXT_COPY_BYTES

    def __post_init__(self) -> None:
        if not 2 <= self.max_nesting_depth <= MAX_NESTING_DEPTH_CEILING:
            raise ValueError(f"max_nesting_depth must be within 2..{MAX_NESTING_DEPTH_CEILING}")


DEFAULT_LIMITS = EventLimits()


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, str_strip_whitespace=False)


class Library(_Model):
    name: str | None = None
    version: str | None = None


class Campaign(_Model):
    name: str | None = None
    source: str | None = None
    medium: str | None = None
    term: str | None = None
    content: str | None = None


class Context(_Model):
    """Segment's context object; every field optional, unknown fields kept."""

    active: bool | None = None
    app: dict[str, Any] | None = None
    campaign: Campaign | None = None
    device: dict[str, Any] | None = None
    ip: str | None = None
    library: Library | None = None
    locale: str | None = None
    location: dict[str, Any] | None = None
    network: dict[str, Any] | None = None
    os: dict[str, Any] | None = None
    page: dict[str, Any] | None = None
    referrer: dict[str, Any] | None = None
    screen: dict[str, Any] | None = None
    group_id: str | None = Field(default=None, alias="groupId")
    timezone: str | None = None
    user_agent: str | None = Field(default=None, alias="userAgent")
    traits: dict[str, Any] | None = None


class Common(_Model):
    """Fields every call has."""

    type: CallType
    message_id: str | None = Field(default=None, alias="messageId", max_length=99)
    anonymous_id: Identifier | None = Field(default=None, alias="anonymousId")
    user_id: Identifier | None = Field(default=None, alias="userId")
    timestamp: datetime | None = None
    original_timestamp: datetime | None = Field(default=None, alias="originalTimestamp")
    sent_at: datetime | None = Field(default=None, alias="sentAt")
    received_at: datetime | None = Field(default=None, alias="receivedAt")
    channel: str | None = None
    context: Context = Field(default_factory=Context)
    integrations: dict[str, Any] = Field(default_factory=dict)
    version: int | str | None = None

    @model_validator(mode="after")
    def _needs_an_identity(self) -> Common:
        if self.type != "alias" and _blank(self.user_id) and _blank(self.anonymous_id):
            raise ValueError("either userId or anonymousId is required")
        return self


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class Track(Common):
    type: Literal["track"] = "track"
    event: str = Field(min_length=1)
    properties: dict[str, Any] = Field(default_factory=dict)


class Identify(Common):
    type: Literal["identify"] = "identify"
    traits: dict[str, Any] = Field(default_factory=dict)


class Page(Common):
    type: Literal["page"] = "page"
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class Screen(Common):
    type: Literal["screen"] = "screen"
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class Group(Common):
    type: Literal["group"] = "group"
    group_id: Identifier = Field(alias="groupId")
    traits: dict[str, Any] = Field(default_factory=dict)


class Alias(Common):
    type: Literal["alias"] = "alias"
    previous_id: Identifier = Field(alias="previousId")
    user_id: Identifier = Field(alias="userId")


Event = Annotated[Track | Identify | Page | Screen | Group | Alias, Field(discriminator="type")]

MODEL_BY_TYPE: dict[str, type[Common]] = {
    "track": Track,
    "identify": Identify,
    "page": Page,
    "screen": Screen,
    "group": Group,
    "alias": Alias,
}


class Batch(_Model):
    """The body of POST /v1/batch (and /v1/import)."""

    batch: list[dict[str, Any]] = Field(max_length=MAX_BATCH_EVENTS)
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    sent_at: datetime | None = Field(default=None, alias="sentAt")
    write_key: str | None = Field(default=None, alias="writeKey")
