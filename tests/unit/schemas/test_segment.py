from __future__ import annotations

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.segment import DEFAULT_LIMITS, MAX_NESTING_DEPTH_CEILING, Batch, Event

EVENT: TypeAdapter[object] = TypeAdapter(Event)


def test_each_call_type_validates() -> None:
    calls: list[dict[str, str | dict[str, str]]] = [
        {"type": "track", "event": "Signed Up", "userId": "u1"},
        {"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro"}},
        {"type": "page", "anonymousId": "a1", "name": "Home"},
        {"type": "screen", "userId": "u1", "name": "Settings"},
        {"type": "group", "userId": "u1", "groupId": "acme"},
        {"type": "alias", "userId": "u1", "previousId": "a1"},
    ]
    for call in calls:
        assert EVENT.validate_python(call).type == call["type"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "call",
    [
        {"type": "track", "userId": "u1"},  # no event
        {"type": "track", "event": "", "userId": "u1"},
        {"type": "identify", "traits": {}},  # no identity
        {"type": "identify", "userId": "  "},
        {"type": "group", "userId": "u1"},  # no groupId
        {"type": "alias", "userId": "u1"},  # no previousId
        {"type": "launch", "userId": "u1"},  # unknown type
        {"type": "track", "event": "E", "userId": "u1", "messageId": "m" * 100},
    ],
)
def test_invalid_calls_are_refused(call: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EVENT.validate_python(call)


def test_unknown_top_level_fields_are_kept() -> None:
    event = EVENT.validate_python({"type": "track", "event": "E", "userId": "u", "custom": 1})
    assert event.model_extra == {"custom": 1}  # type: ignore[attr-defined]


def test_batch_limit() -> None:
    with pytest.raises(ValidationError):
        Batch.model_validate({"batch": [{}] * 2501})
    assert len(Batch.model_validate({"batch": [{}] * 2500}).batch) == 2500


@pytest.mark.parametrize("value", [True, 1.0, 2.5])
def test_an_identifier_is_a_string_or_an_integer_never_coerced(value: object) -> None:
    with pytest.raises(ValidationError):
        EVENT.validate_python({"type": "track", "event": "E", "userId": value})
    with pytest.raises(ValidationError):
        EVENT.validate_python({"type": "group", "userId": "u", "groupId": value})


def test_the_deepest_event_allowed_still_encodes_inside_other_levels() -> None:
    assert 2 <= DEFAULT_LIMITS.max_nesting_depth <= MAX_NESTING_DEPTH_CEILING
    nested: object = 1
    for _ in range(MAX_NESTING_DEPTH_CEILING):
        nested = {"a": nested}
    for _ in range(100):  # room for whatever wraps an event
        nested = [nested]
    orjson.dumps(nested)
    with pytest.raises(TypeError):  # the encoder's own limit, which the ceiling keeps clear of
        orjson.dumps(orjson.loads(b"[" * 255 + b"]" * 255))
