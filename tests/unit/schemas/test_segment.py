from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.segment import Batch, Event

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
