"""Warehouse naming rules, as Segment Warehouses apply them.

- Identifiers are snake_case: camelCase splits at case changes (``sampleText`` ->
  ``sample_text``), every run of characters outside ``[a-z0-9]`` becomes one ``_``, and leading
  and trailing underscores go (``FOO:BAR$BAZ`` -> ``foo_bar_baz``, ``___$$Base64Encode`` ->
  ``base64_encode``).
- Nested objects flatten with ``_`` (``context.app.version`` -> ``context_app_version``); arrays
  are kept as JSON strings.
- An identifier starting with a digit gets a leading ``_``.
- Every generated name fits Snowflake's ``MAX_IDENTIFIER_LENGTH`` (255) by one rule,
  `fit_identifier`: a name too long keeps its first characters and ends in ``_`` and 8 hex digits
  of the whole name's SHA-256, so two long names never meet. A nested column is its parent's
  column, ``_`` and the key's part, fitted (`child_column`); tables and schemas are snake-cased
  names, fitted. Every component names through these functions, so a name is cut identically
  everywhere.
- A value gets no column of its own, and goes to ``_unmapped``, when its key normalises to
  nothing (``"$$$"``, ``"日本"``, ``""``), when its column is one segflow writes itself
  (`RESERVED_COLUMNS`), or when an earlier key of the same event took the column (``"a b"``,
  ``"a-b"``, ``"A_B"`` all name ``a_b``: the first in the object's order wins). There it is keyed
  by its original key path from the map's root (`unmapped_key`: ``properties.a-b``, keys
  joined with ``.``, a ``.`` or ``\\`` inside a key escaped with ``\\``), so two values never
  share a key and none overwrites another. `flatten` is the reference of these rules.
- Segment's 512-character cut of string values (a Redshift VARCHAR(512) limit) is available as
  ``cut_text`` but off by default on Snowflake, whose VARCHAR holds 16 MB.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import orjson

from schemas.snowflake_limits import MAX_IDENTIFIER_LENGTH

SEGMENT_TEXT_LIMIT = 512

# where an upper-case run meets a capitalised word (HTML|Parser); lookarounds only, so a long
# run of capitals costs linear time (the ([A-Z]+)([A-Z][a-z]) form backtracks quadratically)
_ACRONYM = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")
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
        "identified_events",
        "audit_log",
    }
)


_cache: dict[str, str] = {}

# A cut name ends in "_" and this many hex digits of the whole name's SHA-256.
_HASH_DIGITS = 8


def cut_identifier(name: str, limit: int) -> str:
    """`name`'s first characters, ``_`` and a short hash of the whole name: exactly `limit`
    characters, whatever `name`'s length (`limit` must leave room for the hash)."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_DIGITS]
    return f"{name[: limit - _HASH_DIGITS - 1]}_{digest}"


def fit_identifier(name: str, limit: int = MAX_IDENTIFIER_LENGTH) -> str:
    """`name` itself when it fits `limit` characters; else its first characters, ``_`` and a
    short hash of the whole name, exactly `limit` long. Deterministic, so every component cuts
    the same name the same way, and two long names that share a prefix stay apart."""
    if len(name) <= limit:
        return name
    return cut_identifier(name, limit)


def snake_case(name: str) -> str:
    """Segment's column/table name for `name`, fitted to Snowflake's identifier length; empty
    when nothing of it is left (cached, bounded: property names repeat endlessly)."""
    cached = _cache.get(name)
    if cached is not None:
        return cached
    s = _ACRONYM.sub("_", name)
    s = _CAMEL.sub(r"\1_\2", s).lower()
    s = _NON_WORD.sub("_", s).strip("_")
    if s and s[0].isdigit():
        s = "_" + s
    s = fit_identifier(s)
    if len(_cache) < 100_000:
        _cache[name] = s
    return s


def event_table_name(event: str) -> str:
    """The per-event table of a track call (``Order Completed`` -> ``order_completed``)."""
    slug = snake_case(event)
    if not slug:
        return "_unnamed_event"
    if slug in RESERVED_TABLES or slug.startswith("_segflow"):
        slug = fit_identifier(f"{slug}_event")
    return slug


def child_column(prefix: str, key: str) -> str:
    """The column of `key` in an object flattened under `prefix` (``""`` at the top): the
    parent's column, ``_`` and the key's snake_case part, fitted; ``""`` when the key
    normalises to nothing (its value has no column)."""
    part = snake_case(key)
    if not part or not prefix:
        return part
    return fit_identifier(f"{prefix}_{part}")


def path_column(path: str) -> str:
    """Column for a dotted path of nested keys (``context.app.version`` ->
    ``context_app_version``), as `flatten` names it; ``""`` when a key of it normalises to
    nothing."""
    column = ""
    for part in path.split("."):
        column = child_column(column, part)
        if not column:
            return ""
    return column


def is_owned_column(column: str) -> bool:
    """True for a name segflow writes itself: no property, trait or context key may take it."""
    return column in RESERVED_COLUMNS or column.startswith("_segflow")


def unmapped_key(path: Iterable[str]) -> str:
    """The `_unmapped` key of a value without a column: its key path from the map's root
    (``("properties", "a-b")`` -> ``properties.a-b``), keys joined with ``.``, and a ``.`` or
    ``\\`` inside a key escaped with ``\\``, so two different paths never give the same key."""
    return ".".join(p.replace("\\", "\\\\").replace(".", "\\.") for p in path)


def flatten(
    obj: Mapping[str, Any],
    prefix: str = "",
    root: tuple[str, ...] = (),
    taken: Collection[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference of the mapping rules: `obj` -> (columns, unmapped).

    Nested objects flatten with ``_`` (``{"app": {"version": "1"}}`` under prefix ``context``
    gives column ``context_app_version``); arrays become JSON strings; nulls and empty objects
    give nothing. A value whose key normalises to nothing, whose column segflow owns, or whose
    column is in `taken` or was taken by an earlier key goes to unmapped as it is, under
    ``unmapped_key(root + its key path)``. (The sink's fast path, ``sinks.snowflake.rows``, is
    checked against this.)
    """
    columns: dict[str, Any] = {}
    unmapped: dict[str, Any] = {}
    taken_set = set(taken)

    def walk(o: Mapping[str, Any], pre: str, path: tuple[str, ...]) -> None:
        for key, value in o.items():
            if value is None:
                continue
            here = (*path, str(key))
            column = child_column(pre, str(key))
            if not column:
                unmapped[unmapped_key(here)] = value
            elif isinstance(value, Mapping):
                walk(value, column, here)
            elif is_owned_column(column) or column in taken_set or column in columns:
                unmapped[unmapped_key(here)] = value
            elif isinstance(value, list | tuple):
                columns[column] = orjson.dumps(value).decode()
            else:
                columns[column] = value

    walk(obj, prefix, root)
    return columns, unmapped


def cut_text(value: str, limit: int = SEGMENT_TEXT_LIMIT) -> str:
    """Segment's cut of long strings (used where a target column has a length limit)."""
    return value if len(value) <= limit else value[:limit]
