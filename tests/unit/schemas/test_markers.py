from __future__ import annotations

import orjson

from schemas.markers import reverse_etl_context, reverse_etl_sync


def test_marker_found_in_objects_and_json_text() -> None:
    context = {"library": {"name": "x"}, "segflow": reverse_etl_context("plans")}
    assert reverse_etl_sync(context) == "plans"
    assert reverse_etl_sync(orjson.dumps(context).decode()) == "plans"
    assert reverse_etl_sync(orjson.dumps(context)) == "plans"


def test_integrations_flag_alone_marks_an_echo() -> None:
    assert reverse_etl_sync("{}", '{"Segflow": false}') == "unknown"
    assert reverse_etl_sync("{}", '{"Segflow": true}') is None


def test_ordinary_events_are_not_echo() -> None:
    contexts: list[object] = [None, "", "{}", "not json", "[1]", {"segflow": "x"}, {"segflow": {}}]
    for context in contexts:
        assert reverse_etl_sync(context, "{}") is None
