"""Bounds on an event's shape: what the edge and backfill refuse before anything is encoded.

The pydantic models (ingest/validation.py) say what an event *is*; these functions bound how big
and deep it may be (schemas.segment.EventLimits, settings ``SEGFLOW_INGEST_MAX_*``), so a hostile
request gets a 400 naming the item and the field instead of crashing an encoder or multiplying
its bytes. The checks return the item's problem (None when it is within the limits), the batch
context's raises the request's 400:

- **Nesting** deeper than ``max_nesting_depth`` (32, at most 128; the event object is level 1).
  JSON encoding (orjson) stops at 255 levels, so without this check an event nested 255..1,024
  levels deep (the parser's own limit) would fail the handler instead of being refused.
- **Keys**: at most ``max_keys_per_object`` in one object, ``max_keys_per_event`` in all objects
  of the event together, each at most ``max_key_length`` characters (keys become column names);
  a key holding a NUL character is refused.
- **Integers** outside the signed 64-bit range are refused, not kept as text: the processors,
  the sink and the warehouse read JSON integers as 64-bit, and a client that needs larger
  numbers (or exact ones above 2**53 for JavaScript readers) should send them as strings.
  ``parse_json`` keeps such integers exact so that they can be found and refused (orjson turns
  integers outside [-2**63, 2**64) into floats silently).
- **Identifiers** (userId, anonymousId, groupId, previousId) at most ``max_identifier_length``
  characters, **names** (track event, page/screen name and category, which become table names
  and columns) at most ``max_name_length``; neither may hold a NUL character (messageId keeps
  Segment's own limit of 99 characters, in the model).
- **Batch context copies**: a batch's ``context`` and ``integrations`` are copied into each of
  its events; they are checked once as if inside an event, and their bytes times the number of
  events may add at most ``max_context_copy_bytes`` to the request, so a large batch context
  cannot turn into as many copies of itself on Kafka (each event after the copy must still fit
  the edge's ``max_event_bytes`` too).

NUL characters in string *values* of the free-form maps are kept: they travel escaped
(``\\u0000``) in the JSON text of the raw record.
"""

from __future__ import annotations

from typing import Any

import orjson

from ingest.json_bounds import shape_bounds
from ingest.rejections import ItemProblem, bad_request
from ingest.validation import EventFields
from schemas.segment import MAX_INTEGER, MIN_INTEGER, EventLimits

_SEGMENT_CHARS = 40  # a key is shown in a field path cut to this many characters
_PATH_CHARS = 200


# A container met by the walk: (the object or array, its nesting level, the key or index it
# sits at in its parent, the parent's entry). The links give the field path of a problem.
_Entry = tuple[Any, int, "str | int | None", Any]


def shape_problem(
    item: dict[str, Any], limits: EventLimits, index: int = 0, depth: int = 1
) -> ItemProblem | None:
    """Nesting, keys and integers of an event (or of a part of one sitting at level `depth`).

    This is on the edge's hot path: most events are proven within the limits by `plainly_within`
    (C-speed scans of the event's JSON); the others are walked, which finds the problem if any.
    """
    if plainly_within(item, limits, depth):
        return None
    return walk_problem(item, limits, index, depth)


def sized_shape_problem(
    item: dict[str, Any], limits: EventLimits, index: int = 0
) -> tuple[ItemProblem | None, int]:
    """shape_problem of an event, and the size of its compact JSON (Segment's 32 KB limit
    applies to it) when it has no problem: the fast path's JSON text measured, not made twice."""
    blob = _plain_json(item, limits, 1)
    if blob is not None:
        return None, len(blob)
    problem = walk_problem(item, limits, index, 1)
    return problem, 0 if problem is not None else len(orjson.dumps(item))


def plainly_within(item: dict[str, Any], limits: EventLimits, depth: int = 1) -> bool:
    """True only when `item` is surely within the shape limits; False: walk it to know.

    Sound bounds on the event's compact JSON (a fast path may only accept; tests check it never
    accepts what walk_problem refuses): every container adds a "{" or "[" (so their count
    bounds the depth), every key a ":" and at least 4 bytes (their count, or the text's length
    over 4, bounds the keys), integers beyond 53 bits
    (rare; 64 bits is the limit) stop the encoder, and a key longer than max_key_length is a
    run of that many bytes without a quote. Strings with escapes (a NUL is ``\\u0000``, a quote
    ``\\"``; rare in events) send the event to the walk.
    """
    return _plain_json(item, limits, depth) is not None


def _plain_json(item: dict[str, Any], limits: EventLimits, depth: int) -> bytes | None:
    """The compact JSON of `item` when plainly_within holds, else None."""
    try:
        blob = orjson.dumps(item, option=orjson.OPT_STRICT_INTEGER)
    except TypeError:  # nested past 254 levels, or an integer beyond 53 bits
        return None
    containers, colons, escaped, long_run = shape_bounds(blob, limits.max_key_length)
    if depth - 1 + containers > limits.max_nesting_depth:
        return None
    max_keys = min(limits.max_keys_per_object, limits.max_keys_per_event)
    # every key takes at least 4 bytes ("":0), so a short text cannot hold too many
    if len(blob) >> 2 > max_keys and colons > max_keys:
        return None
    if escaped or long_run:  # a key longer than max_key_length is such a run
        return None
    return blob


def walk_problem(
    item: dict[str, Any], limits: EventLimits, index: int = 0, depth: int = 1
) -> ItemProblem | None:
    """The walk behind shape_problem: one iterative pass over the containers; the keys of an
    object are checked together at C speed, and a Python loop looks for the culprit only when
    one is there."""
    max_depth = limits.max_nesting_depth
    max_object = limits.max_keys_per_object
    max_key = limits.max_key_length
    left = limits.max_keys_per_event
    stack: list[_Entry] = [(item, depth, None, None)]
    pop, push = stack.pop, stack.append
    while stack:
        entry = pop()
        node, level = entry[0], entry[1]
        if type(node) is dict:
            count = len(node)
            if count > max_object:
                message = f"an object with {count} keys; at most {max_object}"
                return ItemProblem(index, "too_many_keys", message, _path(entry))
            left -= count
            if left < 0:
                message = f"more than {limits.max_keys_per_event} keys in the event's objects"
                return ItemProblem(index, "too_many_keys", message, _path(entry))
            keys = "".join(node)
            if "\x00" in keys or (len(keys) > max_key and max(map(len, node)) > max_key):
                return _key_problem(node, entry, max_key, index)
            pairs: Any = node.items()
        else:
            pairs = enumerate(node)
        for at, value in pairs:
            kind = type(value)
            if kind is dict or kind is list:
                if level >= max_depth:
                    message = f"nested deeper than {max_depth} levels (the event is level 1)"
                    return ItemProblem(index, "too_deep", message, _path(entry, at))
                push((value, level + 1, at, entry))
            elif kind is int and (value > MAX_INTEGER or value < MIN_INTEGER):
                message = "an integer beyond the signed 64-bit range; send it as a string"
                return ItemProblem(index, "number_out_of_range", message, _path(entry, at))
    return None


def _key_problem(node: dict[str, Any], entry: _Entry, max_key: int, index: int) -> ItemProblem:
    for key in node:
        if len(key) > max_key:
            message = f"a key of {len(key)} characters; at most {max_key}"
            return ItemProblem(index, "key_too_long", message, _path(entry, key))
    key = next(k for k in node if "\x00" in k)
    message = "a key holds a NUL character (\\u0000)"
    return ItemProblem(index, "invalid_key", message, _path(entry, key))


def _path(entry: _Entry, last: str | int | None = None) -> str | None:
    """The field path (outermost first) of `last` inside the container of `entry`; keys are
    cut short and NUL shown escaped, so a hostile key is not echoed whole."""
    parts: list[str | int] = [] if last is None else [last]
    while entry is not None and entry[2] is not None:
        parts.append(entry[2])
        entry = entry[3]
    out = ""
    for part in reversed(parts):
        if type(part) is int:
            out += f"[{part}]"
            continue
        text = str(part).replace("\x00", "\\u0000")
        if len(text) > _SEGMENT_CHARS:
            text = text[:_SEGMENT_CHARS] + "..."
        out += ("." if out else "") + text
        if len(out) > _PATH_CHARS:
            return out[:_PATH_CHARS] + "..."
    return out or None


def fields_problem(fields: EventFields, limits: EventLimits, index: int = 0) -> ItemProblem | None:
    """Lengths and characters of a valid event's identifiers and names."""
    id_limit, name_limit = limits.max_identifier_length, limits.max_name_length
    f = fields
    # the usual answer, at a glance: every value absent, or short and without NUL
    if (
        (f.user_id is None or (len(f.user_id) <= id_limit and "\x00" not in f.user_id))
        and (
            f.anonymous_id is None
            or (len(f.anonymous_id) <= id_limit and "\x00" not in f.anonymous_id)
        )
        and f.previous_id is None
        and f.group_id is None
        and (f.event is None or (len(f.event) <= name_limit and "\x00" not in f.event))
        and f.name is None
        and f.category is None
        and (f.message_id is None or (len(f.message_id) <= id_limit and "\x00" not in f.message_id))
    ):
        return None
    for name, value, limit, code in (
        ("userId", fields.user_id, limits.max_identifier_length, "identifier_too_long"),
        ("anonymousId", fields.anonymous_id, limits.max_identifier_length, "identifier_too_long"),
        ("previousId", fields.previous_id, limits.max_identifier_length, "identifier_too_long"),
        ("groupId", fields.group_id, limits.max_identifier_length, "identifier_too_long"),
        ("event", fields.event, limits.max_name_length, "name_too_long"),
        ("name", fields.name, limits.max_name_length, "name_too_long"),
        ("category", fields.category, limits.max_name_length, "name_too_long"),
        ("messageId", fields.message_id, limits.max_identifier_length, "identifier_too_long"),
    ):
        if value is None:
            continue
        if len(value) > limit:
            return ItemProblem(
                index, code, f"{name} of {len(value)} characters; at most {limit}", name
            )
        if "\x00" in value:
            return ItemProblem(
                index, "invalid_character", f"{name} holds a NUL character (\\u0000)", name
            )
    return None


def check_context_copies(
    context: dict[str, Any] | None,
    integrations: dict[str, Any] | None,
    events: int,
    limits: EventLimits,
) -> None:
    """Raise a 400 when a batch's context/integrations are out of bounds or copy too many bytes."""
    size = 0
    for name, value in (("context", context), ("integrations", integrations)):
        if not value:
            continue
        problem = shape_problem(value, limits, depth=2)
        if problem is not None:
            where = name + ("." + problem.field if problem.field else "")
            raise bad_request("invalid_batch", f"{where}: {problem.message}")
        size += len(orjson.dumps(value))
    if size * events > limits.max_context_copy_bytes:
        raise bad_request(
            "context_copy_too_large",
            f"the batch's context and integrations ({size} bytes) copied into each of its "
            f"{events} events would add {size * events} bytes; at most "
            f"{limits.max_context_copy_bytes}: send smaller batches or the context in the events",
        )
