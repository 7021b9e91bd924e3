"""Decoding and validating request bodies: the edge's hot path, as pure functions.

The pydantic models of ``schemas/segment.py`` are the event contract. Running them on every event
costs microseconds (bench/results/ingest-hot-path.md), so events first meet a *fast path* of plain
``type(...) is ...`` checks that can only **accept**: whenever a value is not of the plain shape
the fast path is sure about (a bool for an identifier, a numeric timestamp, a snake_case alias
such as ``user_id``, any missing or odd field), it steps aside and the pydantic model decides, and
its answer (values and errors) is final. So the fast path never widens or narrows the contract;
tests/unit/ingest/test_validation.py checks on a corpus of cases that the edge accepts and refuses
exactly what the models accept and refuse, with the same values.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from ingest.fields import EventFields, fast_fields, identifier_text, optional_datetime
from ingest.json_bounds import has_long_number
from ingest.rejections import ItemProblem, Rejection, bad_request
from schemas.segment import MODEL_BY_TYPE, Batch, Common


class Envelope(NamedTuple):
    """The batch envelope of /v1/batch, /v1/import and /v1/b."""

    items: list[Any]
    context: dict[str, Any] | None
    integrations: dict[str, Any] | None
    sent_at: datetime | None
    write_key: str | None


# ---------------------------------------------------------------------------- bytes -> object


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo gzip/deflate; refuse bodies over `limit` bytes decompressed, inflating no further."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        data = body
    elif encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise bad_request("invalid_encoding", f"body is not valid {encoding}: {exc}") from exc
        if len(data) <= limit and not inflater.eof:
            raise bad_request("invalid_encoding", f"{encoding} body is truncated")
    else:
        raise Rejection(415, "unsupported_encoding", f"Content-Encoding {encoding} not supported")
    if len(data) > limit:
        raise bad_request("body_too_large", f"request body over {limit} bytes")
    return data


def parse_json(data: bytes) -> Any:
    """Parse JSON text with integers kept exact (raises orjson.JSONDecodeError when invalid).

    orjson turns integers outside [-2**63, 2**64) into floats without a word, which would
    change a number a client sent. Where a run of 19 digits occurs (rare: such numbers, long
    numeric strings), the text is parsed again by the standard library, whose integers are
    exact, so that ingest/limits.py can refuse those outside the 64-bit range.
    """
    value = orjson.loads(data)
    if has_long_number(data):  # 19 digits or more: -9223372036854775809 is outside
        # nested past Python's recursion limit: the nesting limit refuses it anyway
        with contextlib.suppress(RecursionError, ValueError):
            value = json.loads(data)
    return value


def parse_object(data: bytes) -> dict[str, Any]:
    """Parse JSON text that must be an object."""
    try:
        value = parse_json(data)
    except orjson.JSONDecodeError as exc:
        raise bad_request("invalid_json", f"body is not valid JSON: {exc}") from exc
    if type(value) is not dict:
        raise bad_request("not_an_object", "body must be a JSON object")
    return value


# ---------------------------------------------------------------------------- scalars


def model_fields(item: dict[str, Any], index: int = 0) -> EventFields | ItemProblem:
    """Validate with the pydantic model of the event's type: the contract's own answer."""
    call_type = item.get("type")
    if call_type is None:
        return ItemProblem(index, "missing_type", "type is required", "type")
    model = MODEL_BY_TYPE.get(call_type) if type(call_type) is str else None
    if model is None:
        allowed = ", ".join(MODEL_BY_TYPE)
        return ItemProblem(index, "unknown_type", f"type must be one of {allowed}", "type")
    try:
        event = model.model_validate(item)
    except ValidationError as exc:
        return _problem(exc, index)
    return _fields_of(event)


def _fields_of(event: Common) -> EventFields:
    get = event.__dict__.get
    return EventFields(
        event.type,
        event.message_id,
        identifier_text(event.anonymous_id),
        identifier_text(event.user_id),
        identifier_text(get("previous_id")),
        identifier_text(get("group_id")),
        get("event"),
        get("name"),
        get("category"),
        event.timestamp,
        event.original_timestamp,
        event.sent_at,
        event.channel,
    )


def validate_event(item: object, index: int = 0) -> EventFields | ItemProblem:
    """The fields of a valid event, or why it is not one."""
    if type(item) is not dict:
        return ItemProblem(index, "not_an_object", "each event must be a JSON object")
    fields = fast_fields(item)
    if fields is not None:
        return fields
    return model_fields(item, index)


_CODES = {
    ("event", "missing"): "missing_event",
    ("event", "string_too_short"): "missing_event",
    ("messageId", "string_too_long"): "message_id_too_long",
    ("groupId", "missing"): "missing_group_id",
    ("previousId", "missing"): "missing_previous_id",
    ("userId", "missing"): "missing_user_id",
}


# what pydantic appends to the location of a union's field (Identifier, version)
_UNION_TAGS = frozenset({"str", "int"})


def _problem(exc: ValidationError, index: int) -> ItemProblem:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    parts = list(first["loc"])
    while len(parts) > 1 and parts[-1] in _UNION_TAGS:
        parts.pop()  # userId.str -> userId: the field, not the union member tried
    loc = ".".join(str(p) for p in parts)
    if first["type"] == "value_error" and not first["loc"]:
        code = "missing_identity"
        message = "either userId or anonymousId is required"
    else:
        code = _CODES.get((loc, first["type"]), "invalid_field")
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}" for e in errors
        )
    return ItemProblem(index, code, message, loc or None)


# ---------------------------------------------------------------------------- batch envelope


def validate_envelope(body: dict[str, Any], max_events: int) -> Envelope:
    """The batch envelope; its items are validated one by one afterwards."""
    items = body.get("batch")
    context = body.get("context")
    integrations = body.get("integrations")
    write_key = body.get("writeKey")
    ok_sa, sent_at = optional_datetime(body, "sentAt")
    plain = (
        type(items) is list
        and (context is None or type(context) is dict)
        and (integrations is None or type(integrations) is dict)
        and (write_key is None or type(write_key) is str)
        and ok_sa
        and "sent_at" not in body
        and "write_key" not in body
    )
    if not plain:
        items, context, integrations, sent_at, write_key = _model_envelope(body)
    assert isinstance(items, list)
    if len(items) > max_events:
        raise bad_request("too_many_events", f"a batch holds at most {max_events} events")
    return Envelope(items, context, integrations, _utc_or_refuse(sent_at), write_key)


def _utc_or_refuse(value: datetime | None) -> datetime | None:
    """`value` as aware UTC (naive taken as UTC); a 400 when UTC cannot hold it (year 1 or 9999
    with an offset that crosses the calendar's end)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise bad_request("invalid_batch", "sentAt: out of range once converted to UTC") from exc


def _model_envelope(body: dict[str, Any]) -> tuple[Any, ...]:
    if "batch" not in body:
        raise bad_request("missing_batch", "a batch request needs a 'batch' array of events")
    probe = dict(body)
    items = probe.pop("batch")
    probe["batch"] = []  # items are checked one by one, with their index
    try:
        envelope = Batch.model_validate(probe)
    except ValidationError as exc:
        problem = _problem(exc, 0)
        raise bad_request("invalid_batch", problem.message) from exc
    if type(items) is not list:
        raise bad_request("invalid_batch", "batch: Input should be a valid list")
    return items, envelope.context, envelope.integrations, envelope.sent_at, envelope.write_key


def event_bytes(item: object) -> int:
    """The size Segment's 32 KB limit applies to: the event's compact JSON."""
    return len(orjson.dumps(item))
