"""Warehouse naming rules, as Segment Warehouses apply them.

- Identifiers are snake_case: camelCase splits at case changes (``sampleText`` ->
  ``sample_text``), every run of characters outside ``[a-z0-9]`` becomes one ``_``, and leading
  and trailing underscores go (``FOO:BAR$BAZ`` -> ``foo_bar_baz``, ``___$$Base64Encode`` ->
  ``base64_encode``).
- Nested objects flatten with ``_`` (``context.app.version`` -> ``context_app_version``); arrays
  are kept as JSON strings.
- An identifier starting with a digit gets a leading ``_``; identifiers are cut to
  ``MAX_IDENTIFIER_LENGTH`` (Snowflake allows 255).
- Segment's 512-character cut of string values (a Redshift VARCHAR(512) limit) is available as
  ``cut_text`` but off by default on Snowflake, whose VARCHAR holds 16 MB.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from schemas.snowflake_limits import MAX_IDENTIFIER_LENGTH

SEGMENT_TEXT_LIMIT = 512

_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")

# Columns segflow itself writes; a property or trait mapping onto one of them is not a column
# of its own and goes to `_unmapped` instead, so it can never overwrite the event's own data.
RESERVED_COLUMNS: frozenset[str] = frozenset(
    {
        "id",
        "anonymous_id",
        "user_id",
        "received_at",
        "sent_at",
        "timestamp",
        "original_timestamp",
        "uuid_ts",
        "loaded_at",
        "event",
        "event_text",
        "name",
        "category",
        "group_id",
        "previous_id",
        "channel",
        "canonical_user_id",
        "_unmapped",
        "_masked_fields",
        "_pii_key_version",
        "_segflow_topic",
        "_segflow_partition",
        "_segflow_offset",
    }
)

# Tables with a fixed meaning; a track event whose slug equals one of them gets `_event` appended.
RESERVED_TABLES: frozenset[str] = frozenset(
    {
        "tracks",
        "identifies",
        "users",
        "pages",
        "screens",
        "groups",
        "accounts",
        "aliases",
        "identity_map",
        "audit_log",
    }
)


_cache: dict[str, str] = {}

# A cut name ends in "_" and this many hex digits of the whole name's SHA-256.
_HASH_DIGITS = 8


def fit_identifier(name: str, limit: int = MAX_IDENTIFIER_LENGTH) -> str:
    """`name` itself when it fits `limit` characters; else its first characters, ``_`` and a
    short hash of the whole name, exactly `limit` long. Deterministic, so every component cuts
    the same name the same way, and two long names that share a prefix stay apart."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_DIGITS]
    return f"{name[: limit - _HASH_DIGITS - 1]}_{digest}"


def snake_case(name: str) -> str:
    """Segment's column/table name for `name` (cached: property names repeat endlessly)."""
    cached = _cache.get(name)
    if cached is not None:
        return cached
    s = _ACRONYM.sub(r"\1_\2", name)
    s = _CAMEL.sub(r"\1_\2", s).lower()
    s = _NON_WORD.sub("_", s).strip("_")
    if s and s[0].isdigit():
        s = "_" + s
    s = s[:MAX_IDENTIFIER_LENGTH]
    if len(_cache) < 100_000:
        _cache[name] = s
    return s


def event_table_name(event: str) -> str:
    """The per-event table of a track call (``Order Completed`` -> ``order_completed``)."""
    slug = snake_case(event)
    if not slug:
        return "_unnamed_event"
    if slug in RESERVED_TABLES or slug.startswith("_segflow"):
        slug = f"{slug}_event"
    return slug


def path_column(path: str) -> str:
    """Column for a dotted path (``context.app.version`` -> ``context_app_version``)."""
    return "_".join(p for p in (snake_case(part) for part in path.split(".")) if p)


def flatten(obj: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Flatten nested objects into (column, value); arrays become JSON strings.

    Keys are snake-cased part by part and joined with ``_``: ``{"app": {"version": "1"}}`` with
    prefix ``context`` gives ``("context_app_version", "1")``. Empty objects yield nothing.
    """
    for key, value in obj.items():
        part = snake_case(str(key))
        column = f"{prefix}_{part}" if prefix and part else (part or prefix)
        if not column:
            continue
        if isinstance(value, Mapping):
            yield from flatten(value, column)
        elif isinstance(value, list | tuple):
            yield column, orjson.dumps(value).decode()
        else:
            yield column, value


def cut_text(value: str, limit: int = SEGMENT_TEXT_LIMIT) -> str:
    """Segment's cut of long strings (used where a target column has a length limit)."""
    return value if len(value) <= limit else value[:limit]
