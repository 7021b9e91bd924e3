"""Drift detection and routing against the tracking plan."""

from __future__ import annotations

from typing import Any

import pytest

from processors.drift import (
    NEW_PROPERTY,
    TYPE_CHANGE,
    UNPLANNED_PROPERTY,
    DriftDetector,
    FieldChange,
    KnownFields,
    compatible,
    infer_type,
)
from runtime.rules import EventPlan, TrackingPlan

PLAN = {
    "events": {
        "Order Completed": EventPlan(properties={"revenue": "number", "order_id": "string"})
    },
    "traits": {"identify": {"email": "string"}},
}


def detector(mode: str = "evolve", max_fields: int = 1000) -> DriftDetector:
    return DriftDetector(TrackingPlan(mode=mode, **PLAN), KnownFields(max_fields))  # type: ignore[arg-type]


def check(d: DriftDetector, call_type: str, event: str | None, **fields: Any):
    root = "traits" if call_type in ("identify", "group") else "properties"
    doc: dict[str, Any] = {root: dict(fields)}
    known: list[tuple[str, str]] = []
    return d.check("web", call_type, event, doc, known), doc, known


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, "boolean"),
        (3, "integer"),
        (3.5, "number"),
        ("x", "string"),
        ("2024-05-01T10:00:00Z", "timestamp"),
        ({}, "object"),
        ([], "array"),
        (None, None),
    ],
)
def test_infer_type(value, kind):
    assert infer_type(value) == kind


def test_compatible():
    assert compatible("number", "integer") and compatible("string", "timestamp")
    assert not compatible("integer", "number") and not compatible("number", "string")


def test_evolve_reports_first_sighting_once_and_keeps_fields():
    d = detector()
    r, doc, known = check(d, "track", "Order Completed", revenue=5, coupon="X")
    assert r.changes == [FieldChange("properties.coupon", NEW_PROPERTY, None, "string")]
    assert r.unmapped == {} and doc["properties"] == {"revenue": 5, "coupon": "X"}
    assert known  # remembered for the changelog
    r, _, known = check(d, "track", "Order Completed", revenue=7, coupon="Y")
    assert r.changes == [] and known == []


def test_type_change_against_plan_and_against_first_sighting():
    d = detector()
    r, _, _ = check(d, "track", "Order Completed", revenue="ten")
    assert r.changes == [FieldChange("properties.revenue", TYPE_CHANGE, "number", "string")]
    check(d, "page", None, size=1)
    r, _, _ = check(d, "page", None, size="big")
    assert r.changes == [FieldChange("properties.size", TYPE_CHANGE, "integer", "string")]
    r, _, _ = check(d, "page", None, size="bigger")
    assert r.changes == []


def test_strict_moves_unplanned_and_mistyped_fields_to_unmapped():
    d = detector("strict")
    r, doc, _ = check(d, "track", "Order Completed", revenue="ten", order_id="o1", coupon="X")
    assert doc["properties"] == {"order_id": "o1"}
    assert r.unmapped == {"properties": {"revenue": "ten", "coupon": "X"}}
    assert {c.change for c in r.changes} == {TYPE_CHANGE, UNPLANNED_PROPERTY}
    # an event the plan does not know has no known properties in strict mode
    r, doc, _ = check(d, "track", "Other", a=1)
    assert doc["properties"] == {} and r.unmapped == {"properties": {"a": 1}}
    # traits of a call type without a plan section stay (evolve behaviour)
    r, doc, _ = check(d, "group", None, size=3)
    assert doc["traits"] == {"size": 3} and r.unmapped == {}
    r, doc, _ = check(d, "identify", None, email="x", age=3)
    assert r.unmapped == {"traits": {"age": 3}}


def test_known_fields_are_bounded():
    d = detector(max_fields=4)
    for i in range(10):
        check(d, "page", None, **{f"f{i}": 1})
    assert len(d.known) == 4 and d.known.evictions > 0
