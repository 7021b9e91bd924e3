"""A request's events -> the Kafka records to write, or the list of what is wrong: pure logic.

Partial-batch policy: **all or nothing.** Segment answers 200 to a batch and silently drops its
invalid items; segflow never drops silently. If any item of a request is invalid, the whole
request is refused with 400 ``invalid_events`` whose ``errors`` list gives, for each bad item,
its ``index`` in the batch, a machine-readable ``code``, the ``field`` and a ``message``; nothing
of the request is written. The client can fix or drop the named items and resend; resending the
valid ones is safe because events are deduplicated by messageId downstream.

Suppressed users (the deletion list) are not an error: their events are dropped here, counted
in ``PreparedRequest.suppressed`` (and the edge's metrics), and the request succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from ingest.limits import check_context_copies, fields_problem, sized_shape_problem
from ingest.normalize import key_of, merge_defaults, time_problem, to_raw_record
from ingest.rejections import ItemProblem, bad_request
from ingest.validation import EventFields, fast_fields, model_fields, validate_event
from schemas.errors import CodecError
from schemas.segment import DEFAULT_LIMITS, EventLimits


class SuppressionCheck(Protocol):
    """What the edge needs of runtime.suppressions.SuppressionList."""

    def is_suppressed(self, user_id: str | None, anonymous_id: str | None) -> bool: ...


class OutRecord(NamedTuple):
    """One Kafka record of the raw topic of `call_type`."""

    call_type: str
    key: bytes
    value: bytes


@dataclass
class PreparedRequest:
    records: list[OutRecord] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)

    def accepted(self) -> dict[str, int]:
        """Events to be written, per call type."""
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record.call_type] = counts.get(record.call_type, 0) + 1
        return counts


@dataclass(frozen=True)
class RequestContext:
    """What the edge knows about a request besides its events."""

    source: str
    received_at: datetime
    sent_at: datetime | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    call_type: str | None = None  # set by single-event paths (/v1/track): overrides `type`
    trust_timestamp: bool = False  # webhook events: Segment corrected `timestamp` already
    client_ip: str | None = None  # set as context.ip on events without one
    check_event_size: bool = False  # the body is larger than one event may be
    max_event_bytes: int = 32 * 1024
    limits: EventLimits = DEFAULT_LIMITS


# tuple.__new__: the NamedTuple made without its Python-level __new__ (half the cost)
_new_tuple = tuple.__new__


def _is_suppressed(check: SuppressionCheck, fields: EventFields) -> bool:
    if check.is_suppressed(fields.user_id, fields.anonymous_id):
        return True
    return fields.previous_id is not None and check.is_suppressed(fields.previous_id, None)


def prepare_records(
    items: list[Any],
    ctx: RequestContext,
    encode: Callable[[dict[str, Any]], bytes],
    suppressions: SuppressionCheck | None = None,
) -> PreparedRequest:
    """Validate, normalize and encode every item; raise a 400 Rejection listing bad items.

    The limits (ingest/limits.py) are checked on each item after the batch's context was copied
    into it, and before anything encodes it (JSON encoding stops at 255 levels of nesting).
    """
    out = PreparedRequest()
    problems: list[ItemProblem] = []
    records = out.records
    append = records.append
    limits = ctx.limits
    call_type = ctx.call_type
    context, integrations = ctx.context, ctx.integrations
    merge = bool(context or integrations)
    max_event_bytes = ctx.max_event_bytes if ctx.check_event_size else None
    source, received_at, sent_at = ctx.source, ctx.received_at, ctx.sent_at
    trust_timestamp, client_ip = ctx.trust_timestamp, ctx.client_ip
    if merge:
        check_context_copies(context, integrations, len(items), limits)
    for index, item in enumerate(items):
        if type(item) is not dict:
            refused = validate_event(item, index)  # not an object
            assert isinstance(refused, ItemProblem)
            problems.append(refused)
            continue
        if call_type is not None:
            item["type"] = call_type
        if merge:
            merge_defaults(item, context, integrations)
        shape, size = sized_shape_problem(item, limits, index)
        if shape is not None:
            problems.append(shape)
            continue
        if max_event_bytes is not None and size > max_event_bytes:
            problems.append(
                ItemProblem(index, "event_too_large", f"event over {max_event_bytes} bytes")
            )
            continue
        fields = fast_fields(item)
        if fields is None:
            checked = model_fields(item, index)
            if isinstance(checked, ItemProblem):
                problems.append(checked)
                continue
            fields = checked
        bounds = fields_problem(fields, limits, index)
        if bounds is not None:
            problems.append(bounds)
            continue
        try:
            record = to_raw_record(
                item,
                fields,
                source,
                received_at,
                sent_at,
                trust_timestamp=trust_timestamp,
                client_ip=client_ip,
            )
        except (OverflowError, ValueError) as exc:
            problems.append(time_problem(index, exc))
            continue
        if problems:
            continue  # the request is refused anyway: only look for more problems
        if suppressions is not None and _is_suppressed(suppressions, fields):
            out.suppressed[fields.type] = out.suppressed.get(fields.type, 0) + 1
            continue
        try:
            value = encode(record)
        except CodecError as exc:  # a net: validation should have refused what cannot encode
            problems.append(
                ItemProblem(index, "unencodable", f"the event cannot be encoded: {exc}")
            )
            continue
        append(_new_tuple(OutRecord, (fields.type, key_of(fields), value)))
    if problems:
        raise bad_request(
            "invalid_events",
            f"{len(problems)} of {len(items)} events invalid; nothing was written",
            problems,
        )
    return out
