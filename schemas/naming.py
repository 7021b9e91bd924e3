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
  nothing (``"$$$"``, ``"日本"``, ``""``), when its column is reserved on the table it is written
  to (`ReservedColumns`: the table's fixed columns, the names segflow writes itself and, on a
  table holding an event's context, every ``context_*`` name), or when an earlier key of the
  same event took the column (``"a b"``, ``"a-b"``, ``"A_B"`` all name ``a_b``: the first in the
  object's order wins). Reserved names are per table, as in Segment's layout: a trait called
  ``name`` is a column of identifies, users, groups and accounts, while ``name`` and
  ``category`` of pages and screens are the call's own. In ``_unmapped`` a value is keyed by its
  original key path from the map's root (`unmapped_key`: ``properties.a-b``, keys joined with
  ``.``, a ``.`` or ``\\`` inside a key escaped with ``\\``; `parse_unmapped_key` reverses it),
  so two values never share a key and none overwrites another. `flatten` is the reference of
  these rules.
- Segment's 512-character cut of string values (a Redshift VARCHAR(512) limit) is available as
  ``cut_text`` but off by default on Snowflake, whose VARCHAR holds 16 MB.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.snowflake_limits import MAX_IDENTIFIER_LENGTH

SEGMENT_TEXT_LIMIT = 512

# where an upper-case run meets a capitalised word (HTML|Parser); lookarounds only, so a long
# run of capitals costs linear time (the ([A-Z]+)([A-Z][a-z]) form backtracks quadratically)
_ACRONYM = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")

OWNED_PREFIX = "_segflow"
"""Every name starting so is segflow's own, on every table."""
SEGFLOW_COLUMNS: frozenset[str] = frozenset(
    {"_unmapped", "_masked_fields", "_pii_key_version", "canonical_user_id", "uuid_ts", "loaded_at"}
)
"""Names segflow writes on some table: no property or trait takes one, on any table."""
CONTEXT_PREFIX = "context_"
"""The flattened context's columns: on a table holding them, no property or trait takes one."""


@dataclass(frozen=True, slots=True)
class ReservedColumns:
    """The names no property or trait may take on one table (its own columns): `names`, and
    every name starting with one of `prefixes`. A value mapping onto one goes to ``_unmapped``,
    so it never overwrites the event's own data. Built per table layout (the sink's
    ``sinks.snowflake.tables.reserved_columns``), never per event."""

    names: frozenset[str]
    prefixes: tuple[str, ...] = (OWNED_PREFIX,)

    def __contains__(self, column: str) -> bool:
        return column in self.names or column.startswith(self.prefixes)


NOTHING_RESERVED = ReservedColumns(frozenset(), ())
"""For maps whose columns nothing else writes (an event's context: all ``context_*``)."""


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
    return key_path_column(path.split("."))


def is_owned_column(column: str) -> bool:
    """True for a name segflow writes itself on any table (`SEGFLOW_COLUMNS`, ``_segflow*``);
    a table reserves these and its own fixed columns (`ReservedColumns`)."""
    return column in SEGFLOW_COLUMNS or column.startswith(OWNED_PREFIX)


def unmapped_key(path: Iterable[str]) -> str:
    """The `_unmapped` key of a value without a column: its key path from the map's root
    (``("properties", "a-b")`` -> ``properties.a-b``), keys joined with ``.``, and a ``.`` or
    ``\\`` inside a key escaped with ``\\``, so two different paths never give the same key."""
    return ".".join(p.replace("\\", "\\\\").replace(".", "\\.") for p in path)


def parse_unmapped_key(key: str) -> tuple[str, ...]:
    """The key path an `_unmapped` key was made from (`unmapped_key` reversed):
    ``properties.a\\.b`` -> ``("properties", "a.b")``."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(key)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return tuple(parts)


def key_path_column(path: Iterable[str]) -> str:
    """The column `flatten` names for a value at key path `path` below a map's root (``("a",
    "b")`` -> ``a_b``); ``""`` when a key of it normalises to nothing."""
    column = ""
    for part in path:
        column = child_column(column, part)
        if not column:
            return ""
    return column


def flatten(
    obj: Mapping[str, Any],
    prefix: str = "",
    root: tuple[str, ...] = (),
    taken: Collection[str] = (),
    *,
    reserved: ReservedColumns,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference of the mapping rules: `obj` -> (columns, unmapped).

    Nested objects flatten with ``_`` (``{"app": {"version": "1"}}`` under prefix ``context``
    gives column ``context_app_version``); arrays become JSON strings; nulls and empty objects
    give nothing. A value whose key normalises to nothing, whose column is `reserved` on the
    table written, or whose column is in `taken` or was taken by an earlier key goes to
    unmapped as it is, under ``unmapped_key(root + its key path)``. (The sink's fast path,
    ``sinks.snowflake.rows``, is checked against this.)
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
            elif column in reserved or column in taken_set or column in columns:
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
