from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from reverse_etl.calls import (
    CallSpec,
    RowSkipped,
    build_call,
    changed,
    column_name,
    json_value,
    row_to_dict,
)
from reverse_etl.settings import ReverseEtlSettings
from schemas.markers import reverse_etl_sync

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)
IDENTIFY = CallSpec(
    "plans", "identify", "user_id", "anonymous_id", "user_id", integrations={"Segflow": False}
)
TRACK = CallSpec(
    "orders",
    "track",
    "user_id",
    "anonymous_id",
    "order_id",
    event="Order Synced",
    timestamp_column="placed_at",
)


def test_column_names_and_values() -> None:
    assert column_name("USER_ID") == "user_id"
    assert column_name("firstName") == "firstName"
    assert json_value(Decimal("5")) == 5 and json_value(Decimal("2.5")) == 2.5
    assert json_value(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05.000Z"
    assert json_value(date(2024, 1, 2)) == "2024-01-02"
    assert json_value(b"\x00\x01") == "AAE="
    assert json_value('{"a": [1]}', is_json=True) == {"a": [1]}
    assert json_value("not json", is_json=True) == "not json"
    row = row_to_dict(
        ["USER_ID", "PREFS", "seatCount"], ["u1", '{"x":1}', Decimal(3)], frozenset({"PREFS"})
    )
    assert row == {"user_id": "u1", "prefs": {"x": 1}, "seatCount": 3}


def test_identify_call_carries_traits_marker_and_stable_ids() -> None:
    row = {"user_id": "u1", "plan": "pro", "seats": 5}
    rc = build_call(IDENTIFY, row, NOW)
    assert rc.key == "u1"
    assert rc.call["type"] == "identify" and rc.call["userId"] == "u1"
    assert rc.call["traits"] == {"plan": "pro", "seats": 5}
    assert rc.call["timestamp"] == "2024-05-01T12:00:00.000Z"
    assert rc.call["integrations"] == {"Segflow": False}
    assert reverse_etl_sync(rc.call["context"]) == "plans"
    # Same row later: same hash and messageId (the send time is not part of either).
    again = build_call(IDENTIFY, dict(row), datetime(2025, 1, 1, tzinfo=UTC))
    assert again.row_hash == rc.row_hash and again.call["messageId"] == rc.call["messageId"]
    other = build_call(IDENTIFY, {**row, "seats": 6}, NOW)
    assert other.row_hash != rc.row_hash and other.call["messageId"] != rc.call["messageId"]
    assert len(rc.call["messageId"]) < 100


def test_track_call_uses_event_key_and_timestamp_columns() -> None:
    row = {"order_id": 17, "user_id": "u1", "total": 9.5, "placed_at": "2024-04-30T10:00:00.000Z"}
    rc = build_call(TRACK, row, NOW)
    assert rc.key == "17"
    assert rc.call["event"] == "Order Synced"
    assert rc.call["properties"] == {"total": 9.5}
    assert rc.call["timestamp"] == "2024-04-30T10:00:00.000Z"
    by_column = CallSpec("o", "track", "user_id", "anonymous_id", "order_id")
    rc2 = build_call(by_column, {"order_id": 1, "user_id": "u", "event": "Paid", "x": 1}, NOW)
    assert rc2.call["event"] == "Paid" and rc2.call["properties"] == {"x": 1}


@pytest.mark.parametrize(
    ("spec", "row", "reason"),
    [
        (IDENTIFY, {"user_id": None, "plan": "x"}, "missing_key"),
        (IDENTIFY, {"user_id": "  ", "plan": "x"}, "missing_key"),
        (CallSpec("s", "identify", "user_id", "anonymous_id", "k"), {"k": "1"}, "missing_identity"),
        (
            CallSpec("o", "track", "user_id", "anonymous_id", "order_id"),
            {"order_id": 1, "user_id": "u"},
            "missing_event",
        ),
    ],
)
def test_rows_that_cannot_be_calls(spec: CallSpec, row: dict[str, object], reason: str) -> None:
    with pytest.raises(RowSkipped) as info:
        build_call(spec, row, NOW)
    assert info.value.reason == reason


GROUP = CallSpec(
    "health", "group", "user_id", "anonymous_id", "account_id", group_id_column="account_id"
)


def test_group_call_carries_the_group_id_a_member_and_traits() -> None:
    row = {"account_id": "acme", "user_id": "u1", "health_score": 42.5, "at_risk": True}
    rc = build_call(GROUP, row, NOW)
    assert rc.key == "acme"
    assert rc.call["type"] == "group" and rc.call["groupId"] == "acme"
    assert rc.call["userId"] == "u1"
    assert rc.call["traits"] == {"health_score": 42.5, "at_risk": True}
    assert "properties" not in rc.call
    with pytest.raises(RowSkipped) as info:
        spec = CallSpec("h", "group", "user_id", "anonymous_id", "k", group_id_column="account_id")
        build_call(spec, {"k": "1", "account_id": None, "user_id": "u1"}, NOW)
    assert info.value.reason == "missing_group"


def test_a_group_sync_is_keyed_by_its_group_column() -> None:
    settings = ReverseEtlSettings(call="group", group_id_column="account_id", query="select 1")
    assert settings.row_key_column == "account_id"
    assert ReverseEtlSettings(query="select 1").row_key_column == "user_id"


def test_anonymous_only_rows_are_sent() -> None:
    spec = CallSpec("s", "identify", "user_id", "anonymous_id", "anonymous_id")
    rc = build_call(spec, {"anonymous_id": "a1", "user_id": None, "x": 1}, NOW)
    assert "userId" not in rc.call and rc.call["anonymousId"] == "a1"
    assert rc.call["traits"] == {"x": 1}


def test_diff_keeps_new_and_changed_rows() -> None:
    a = build_call(IDENTIFY, {"user_id": "a", "p": 1}, NOW)
    b = build_call(IDENTIFY, {"user_id": "b", "p": 1}, NOW)
    c = build_call(IDENTIFY, {"user_id": "c", "p": 1}, NOW)
    state = {"a": a.row_hash, "b": "old-hash"}
    assert [x.key for x in changed([a, b, c], state)] == ["b", "c"]
