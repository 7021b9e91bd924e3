"""Bounds on an event's shape: each limit refuses just past its value, naming the field."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from ingest import json_bounds
from ingest.backfill import BackfillSettings
from ingest.limits import (
    check_context_copies,
    fields_problem,
    plainly_within,
    shape_problem,
    sized_shape_problem,
    walk_problem,
)
from ingest.rejections import Rejection
from ingest.settings import EventLimitsSettings, IngestSettings
from ingest.validation import EventFields, validate_event
from schemas.segment import DEFAULT_LIMITS, MAX_NESTING_DEPTH_CEILING, EventLimits

SMALL = EventLimits(
    max_nesting_depth=4,
    max_identifier_length=8,
    max_name_length=10,
    max_key_length=5,
    max_keys_per_object=3,
    max_keys_per_event=6,
    max_context_copy_bytes=100,
)


def nested(levels: int) -> dict[str, Any]:
    """An event whose deepest container is at nesting level `levels` (the event is level 1)."""
    value: dict[str, Any] = {}
    for _ in range(levels - 2):
        value = {"a": value}
    return {"p": value}


def test_nesting_up_to_the_limit_passes_and_one_more_level_is_refused() -> None:
    assert shape_problem(nested(4), SMALL) is None
    problem = shape_problem(nested(5), SMALL, index=7)
    assert problem is not None
    assert (problem.index, problem.code, problem.field) == (7, "too_deep", "p.a.a.a")
    assert "4 levels" in problem.message


def test_arrays_count_as_levels_and_paths_show_their_indexes() -> None:
    assert shape_problem({"p": [[[]]]}, SMALL) is None
    problem = shape_problem({"p": [0, [1, [[2]]]]}, SMALL)
    assert problem is not None and (problem.code, problem.field) == ("too_deep", "p[1][1][0]")


@pytest.mark.parametrize("levels", [33, 254, 255, 600, 1000])
def test_default_limit_refuses_what_the_json_encoder_cannot_encode(levels: int) -> None:
    deep = orjson.loads(b'{"properties":' + b'{"a":' * (levels - 1) + b"1" + b"}" * levels)
    problem = shape_problem(deep, DEFAULT_LIMITS)
    assert problem is not None and problem.code == "too_deep"


def test_keys_per_object_and_per_event() -> None:
    assert shape_problem({"a": 1, "b": 2, "c": {"d": 1, "e": 2, "f": 3}}, SMALL) is None
    problem = shape_problem({"a": 1, "p": {"b": 1, "c": 2, "d": 3, "e": 4}}, SMALL)
    assert problem is not None
    assert (problem.code, problem.field) == ("too_many_keys", "p")
    assert "4 keys; at most 3" in problem.message
    problem = shape_problem({"a": {"x": 1, "y": 2}, "b": {"x": 1, "y": 2}, "c": {"x": 1}}, SMALL)
    assert problem is not None and problem.code == "too_many_keys"
    assert "more than 6 keys" in problem.message


def test_key_length_and_nul_in_keys() -> None:
    assert shape_problem({"abcde": {"vwxyz": 1}}, SMALL) is None
    problem = shape_problem({"p": {"abcdef": 1}}, SMALL)
    assert problem is not None
    assert (problem.code, problem.field) == ("key_too_long", "p.abcdef")
    problem = shape_problem({"p": [{"a\x00": 1}]}, SMALL)
    assert problem is not None
    assert (problem.code, problem.field) == ("invalid_key", "p[0].a\\u0000")


def test_a_hostile_key_is_not_echoed_whole() -> None:
    problem = shape_problem({"p": {"k" * 10_000: 1}}, DEFAULT_LIMITS)
    assert problem is not None and problem.field is not None
    assert problem.code == "key_too_long" and len(problem.field) < 100


def test_nul_in_string_values_is_kept() -> None:
    assert shape_problem({"p": {"a": "x\x00y", "b": ["\x00"]}}, SMALL) is None


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (2**63 - 1, True),
        (-(2**63), True),
        (2**63, False),
        (2**64 - 1, False),
        (-(2**63) - 1, False),
        (10**40, False),
        (1e300, True),  # a float travels as the JSON text it is
        (True, True),
    ],
)
def test_integers_must_fit_a_signed_64_bit_long(value: object, ok: bool) -> None:
    problem = shape_problem({"properties": {"order": [{"total": value}]}}, DEFAULT_LIMITS)
    if ok:
        assert problem is None
    else:
        assert problem is not None
        assert (problem.code, problem.field) == ("number_out_of_range", "properties.order[0].total")


def test_top_level_integers_are_checked_too() -> None:
    problem = shape_problem({"userId": 2**64 - 1}, DEFAULT_LIMITS)
    assert problem is not None and (problem.code, problem.field) == (
        "number_out_of_range",
        "userId",
    )


def _fields(**kw: Any) -> EventFields:
    fields = validate_event({"type": "track", "event": "e", "userId": "u", **kw})
    assert isinstance(fields, EventFields)
    return fields


@pytest.mark.parametrize(
    ("item", "code", "field"),
    [
        ({"userId": "u" * 9}, "identifier_too_long", "userId"),
        ({"anonymousId": "a" * 9}, "identifier_too_long", "anonymousId"),
        ({"userId": 123_456_789}, "identifier_too_long", "userId"),
        ({"event": "e" * 11}, "name_too_long", "event"),
        ({"userId": "u\x00"}, "invalid_character", "userId"),
        ({"event": "e\x00"}, "invalid_character", "event"),
        ({"messageId": "m\x00"}, "invalid_character", "messageId"),
    ],
)
def test_identifier_and_name_lengths(item: dict[str, Any], code: str, field: str) -> None:
    problem = fields_problem(_fields(**item), SMALL, index=4)
    assert problem is not None and (problem.index, problem.code, problem.field) == (4, code, field)


@pytest.mark.parametrize(
    ("item", "code", "field"),
    [
        ({"type": "page", "anonymousId": "a", "name": "n" * 11}, "name_too_long", "name"),
        ({"type": "page", "anonymousId": "a", "category": "c" * 11}, "name_too_long", "category"),
        ({"type": "group", "userId": "u", "groupId": "g" * 9}, "identifier_too_long", "groupId"),
        (
            {"type": "alias", "userId": "u", "previousId": "p" * 9},
            "identifier_too_long",
            "previousId",
        ),
    ],
)
def test_every_call_types_identifiers_and_names(
    item: dict[str, Any], code: str, field: str
) -> None:
    fields = validate_event(item)
    assert isinstance(fields, EventFields)
    problem = fields_problem(fields, SMALL)
    assert problem is not None and (problem.code, problem.field) == (code, field)


def test_identifiers_and_names_at_their_limits_pass() -> None:
    assert fields_problem(_fields(userId="u" * 8, event="e" * 10), SMALL) is None


def test_batch_context_is_checked_once_as_if_inside_an_event() -> None:
    check_context_copies({"a": {"b": {}}}, None, 1, SMALL)  # context is level 2: b is 4
    with pytest.raises(Rejection) as info:
        check_context_copies({"a": {"b": {"c": {}}}}, None, 1, SMALL)
    assert (info.value.status, info.value.code) == (400, "invalid_batch")
    assert info.value.message.startswith("context.a.b.c: nested deeper")
    with pytest.raises(Rejection) as info:
        check_context_copies(None, {"A": 2**70}, 1, SMALL)
    assert info.value.message.startswith("integrations.A: an integer beyond")


def test_batch_context_copies_are_bounded_in_bytes() -> None:
    context = {"k": "x" * 42}  # 50 bytes of JSON
    check_context_copies(context, None, 2, SMALL)  # 100 bytes: at the limit
    with pytest.raises(Rejection) as info:
        check_context_copies(context, {}, 3, SMALL)
    assert (info.value.status, info.value.code) == (400, "context_copy_too_large")
    assert "150 bytes" in info.value.message


def test_limits_are_settings_shared_by_the_edge_and_backfill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEGFLOW_INGEST_MAX_NESTING_DEPTH", "12")
    monkeypatch.setenv("SEGFLOW_INGEST_MAX_IDENTIFIER_LENGTH", "64")
    for settings in (IngestSettings().limits, BackfillSettings().limits):
        limits = settings.event_limits()
        assert (limits.max_nesting_depth, limits.max_identifier_length) == (12, 64)
        assert limits.max_keys_per_object == DEFAULT_LIMITS.max_keys_per_object


@pytest.mark.parametrize("depth", [1, MAX_NESTING_DEPTH_CEILING + 1])
def test_a_nesting_limit_the_encoder_cannot_honour_is_refused(depth: int) -> None:
    with pytest.raises(ValidationError):
        EventLimitsSettings(max_nesting_depth=depth)
    with pytest.raises(ValueError, match="max_nesting_depth"):
        EventLimits(max_nesting_depth=depth)


# ------------------------------------------------------------------ the fast path


_KEYS = ["a", "bb", "ccccc", "dddddd", "k:1", "{[", 'q"', "s\\", "n\x00", "é" * 5, "12345678"]
_SCALARS: list[Any] = [
    None,
    True,
    1.5,
    1e300,
    "",
    "x" * 9,
    "a:b{c}[d]",
    'q"uote',
    "back\\slash",
    "nul\x00",
    "ünï",
    2**53 - 1,
    2**53,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**40,
]


def _random_value(rng: random.Random, level: int) -> Any:
    roll = rng.random()
    if level < 9 and roll < 0.25:
        return {rng.choice(_KEYS): _random_value(rng, level + 1) for _ in range(rng.randint(0, 5))}
    if level < 9 and roll < 0.4:
        return [_random_value(rng, level + 1) for _ in range(rng.randint(0, 4))]
    return rng.choice(_SCALARS)


def _random_limits(rng: random.Random) -> EventLimits:
    return EventLimits(
        max_nesting_depth=rng.randint(2, 7),
        max_key_length=rng.choice([1, 3, 6, 9, 30, 512]),
        max_keys_per_object=rng.randint(1, 6),
        max_keys_per_event=rng.randint(3, 25),
    )


@pytest.mark.parametrize("scan", ["c", "python"])
def test_the_fast_path_never_accepts_what_the_walk_refuses(
    scan: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the one-pass text scan in C (ingest/_jsonscan.c) and with its Python fallback."""
    if scan == "python":
        monkeypatch.setattr(json_bounds, "_jsonscan", None)
    else:
        assert json_bounds.NATIVE_AVAILABLE, "ingest/_jsonscan.c was not built: run make venv"
    rng = random.Random(13)
    accepted = refused = 0
    for _ in range(20_000):
        item = {rng.choice(_KEYS): _random_value(rng, 2) for _ in range(rng.randint(0, 4))}
        limits = _random_limits(rng)
        expected = walk_problem(item, limits, 3)
        if plainly_within(item, limits):
            accepted += 1
            assert expected is None, (item, limits, expected)
        refused += expected is not None
        assert shape_problem(item, limits, 3) == expected
    assert accepted > 2_000 and refused > 2_000  # both paths are really taken


def test_the_fast_path_takes_plain_events() -> None:
    event = {
        "type": "track",
        "userId": "u-1",
        "event": "Order Completed",
        "timestamp": "2024-05-01T12:00:00.123Z",
        "properties": {"revenue": 9.5, "products": [{"sku": f"s-{i}", "qty": 1} for i in range(5)]},
        "context": {"ip": "203.0.113.7", "page": {"url": "https://shop.example/a?b=c"}},
    }
    assert plainly_within(event, DEFAULT_LIMITS)


@pytest.mark.parametrize(
    "item",
    [
        {"type": "track", "event": "e", "properties": {"a": [1, 2.5, None, "x"]}},
        {"type": "track", "properties": {"quoted": 'say "hi"', "big": 2**60}},  # walked
    ],
)
def test_sized_shape_problem_measures_the_compact_json(item: dict[str, Any]) -> None:
    assert sized_shape_problem(item, DEFAULT_LIMITS, 3) == (None, len(orjson.dumps(item)))


def test_sized_shape_problem_reports_the_problem_as_shape_problem_does() -> None:
    item = {"type": "track", "properties": {"n": 2**70}}
    problem, _ = sized_shape_problem(item, DEFAULT_LIMITS, 3)
    assert problem == shape_problem(item, DEFAULT_LIMITS, 3)
    assert problem is not None and problem.code == "number_out_of_range" and problem.index == 3
