from __future__ import annotations

import gc
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from sinks.snowflake import rows as rows_module
from sinks.snowflake.rows import (
    Origin,
    collapse,
    event_rows,
    first_per_id,
    identity_row,
    schema_change_row,
    schema_name,
)
from sinks.snowflake.tables import Kind

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ORIGIN = Origin("segment.events.track", 2, 41)


def record(call: str, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "type": call,
        "messageId": "m-1",
        "source": "Web App",
        "anonymousId": "a-1",
        "userId": "u-1",
        "previousId": None,
        "groupId": None,
        "event": None,
        "name": None,
        "category": None,
        "receivedAt": T0,
        "sentAt": T0 - timedelta(seconds=1),
        "originalTimestamp": T0 - timedelta(seconds=3),
        "timestamp": T0 - timedelta(seconds=2),
        "properties": "{}",
        "traits": "{}",
        "context": orjson.dumps({"library": {"name": "analytics.js"}, "ip": "1.2.3.0"}).decode(),
        "integrations": "{}",
        "channel": "browser",
        "extra": "{}",
        "canonicalUserId": "u-1",
        "maskedFields": ["context.ip:truncate"],
        "piiKeyVersion": "k1",
        "unmapped": "{}",
        "processedAt": T0,
    }
    rec.update(over)
    return rec


def test_track_gives_tracks_per_event_and_audit_rows() -> None:
    props = {"orderId": "o1", "revenue": 12.5, "id": "clash", "items": [1, 2], "cart": {"size": 2}}
    rows = event_rows(
        record("track", event="Order Completed", properties=orjson.dumps(props).decode()),
        ORIGIN,
        audit=True,
    )
    assert [(r.schema, r.table, r.kind) for r in rows] == [
        ("web_app", "tracks", Kind.APPEND),
        ("web_app", "order_completed", Kind.APPEND),
        ("web_app", "audit_log", Kind.APPEND),
    ]
    tracks, per_event, audit = rows
    assert tracks.values["event"] == "order_completed"
    assert tracks.values["event_text"] == "Order Completed"
    assert tracks.values["context_library_name"] == "analytics.js"
    assert tracks.values["context_ip"] == "1.2.3.0"
    assert "order_id" not in tracks.values  # tracks has no properties, as in Segment
    assert per_event.values["order_id"] == "o1"
    assert per_event.values["revenue"] == 12.5
    assert per_event.values["items"] == "[1,2]"  # arrays as JSON strings
    assert per_event.values["cart_size"] == 2
    assert per_event.values["id"] == "m-1"  # a property named id cannot overwrite the id
    assert per_event.unmapped == {"properties.id": "clash"}
    assert per_event.values["_masked_fields"] == '["context.ip:truncate"]'
    assert (per_event.values["_segflow_partition"], per_event.values["_segflow_offset"]) == (2, 41)
    payload = orjson.loads(audit.values["payload"])
    assert payload["properties"]["orderId"] == "o1"
    assert payload["context"]["library"]["name"] == "analytics.js"
    assert audit.values["id"] == "m-1"


def test_identify_gives_identifies_and_users_and_no_audit_when_off() -> None:
    traits = {"plan": "pro", "email": "h@x", "address": {"city": "Oslo"}}
    rows = event_rows(record("identify", traits=orjson.dumps(traits).decode()), ORIGIN, audit=False)
    assert [r.table for r in rows] == ["identifies", "users"]
    users = rows[1]
    assert users.kind is Kind.MERGE
    assert users.values == {
        "id": "u-1",
        "received_at": T0,
        "plan": "pro",
        "email": "h@x",
        "address_city": "Oslo",
    }


def test_identify_without_user_id_has_no_users_row() -> None:
    rows = event_rows(record("identify", userId=None), ORIGIN, audit=False)
    assert [r.table for r in rows] == ["identifies"]


def test_group_page_screen_alias_tables() -> None:
    group = event_rows(
        record("group", groupId="g-1", traits='{"employees": 40}'), ORIGIN, audit=False
    )
    assert [r.table for r in group] == ["groups", "accounts"]
    assert group[0].values["group_id"] == "g-1" and group[0].values["employees"] == 40
    assert group[1].values["id"] == "g-1"
    page = event_rows(
        record("page", name="Home", category="Docs", properties='{"path": "/"}'),
        ORIGIN,
        audit=False,
    )
    assert page[0].table == "pages" and page[0].values["path"] == "/"
    assert page[0].values["name"] == "Home" and page[0].values["category"] == "Docs"
    assert event_rows(record("screen", name="S"), ORIGIN, audit=False)[0].table == "screens"
    alias = event_rows(record("alias", previousId="a-0"), ORIGIN, audit=False)
    assert alias[0].table == "aliases" and alias[0].values["previous_id"] == "a-0"


def test_processor_unmapped_lands_in_the_per_event_row() -> None:
    rows = event_rows(
        record("track", event="Signed Up", unmapped='{"weird": 1}'), ORIGIN, audit=False
    )
    assert rows[1].unmapped == {"weird": 1}


def test_identity_row_and_schema_names() -> None:
    link = {
        "source": "web",
        "identifier": "a-1",
        "identifierType": "anonymous_id",
        "canonicalUserId": "u-1",
        "messageId": "m-9",
        "linkedAt": T0,
    }
    r = identity_row(link, Origin("segment.identity", 0, 3))
    assert (r.schema, r.table, r.kind) == ("web", "identity_map", Kind.REPLACE)
    assert r.values["canonical_user_id"] == "u-1"
    assert schema_name("Mobile-App") == "mobile_app"
    assert schema_name("") == "unknown_source"


def test_collapse_keeps_latest_traits_and_older_ones_where_missing() -> None:
    first = event_rows(
        record("identify", messageId="m1", traits='{"plan": "free", "email": "e"}'),
        ORIGIN,
        audit=False,
    )[1]
    later = event_rows(
        record(
            "identify",
            messageId="m2",
            receivedAt=T0 + timedelta(seconds=5),
            traits='{"plan": "pro"}',
        ),
        ORIGIN,
        audit=False,
    )[1]
    out = collapse([later, first])  # order of arrival does not matter: received_at does
    assert len(out) == 1
    assert out[0].values["plan"] == "pro" and out[0].values["email"] == "e"
    assert out[0].values["received_at"] == T0 + timedelta(seconds=5)


def test_spread_names_columns_as_the_naming_module_flattens() -> None:
    from schemas.naming import NOTHING_RESERVED, flatten
    from sinks.snowflake.rows import _CONTEXT_NAMER, _spread

    obj = {
        "appName": "x",
        "nested": {"deepKey": {"k2": 1}, "list": [1, {"a": 2}]},
        "9lives": True,
        "": 5,
        "FOO:BAR$BAZ": "q",
        "foo bar baz": "r",
    }
    target: dict[str, Any] = {}
    unmapped: dict[str, Any] = {}
    _spread(target, obj, "context", unmapped, (None, "context"), _CONTEXT_NAMER)
    assert (target, unmapped) == flatten(obj, "context", ("context",), reserved=NOTHING_RESERVED)
    assert unmapped == {"context.": 5, "context.foo bar baz": "r"}


def _track(props: dict[str, Any], **over: Any) -> tuple[Any, Any]:
    """The tracks and per-event rows of a track call with these properties."""
    rec = record("track", event="Order Completed", properties=orjson.dumps(props).decode())
    rec.update(over)
    tracks, per_event = event_rows(rec, ORIGIN, audit=False)
    return tracks, per_event


def test_long_nested_keys_make_a_column_that_fits() -> None:
    """{"a"*200: {"b"*200: 1}} made a 401-character column, which Snowflake refuses."""
    _, per_event = _track({"a" * 200: {"b" * 200: 1}, "p" * 300 + "x": "first"})
    long_columns = {c: v for c, v in per_event.values.items() if len(c) > 100}
    assert sorted(long_columns.values(), key=str) == [1, "first"]
    assert all(len(c) == 255 for c in long_columns)
    _, again = _track({"p" * 300 + "y": "second"})
    assert "second" in again.values.values()
    assert not set(again.values) & set(long_columns)  # a shared prefix is not a shared column


def test_keys_normalising_to_nothing_keep_their_values_in_unmapped() -> None:
    _, per_event = _track({"$$$": "dollars", "日本": "kanji", "": 0, "cart": {"🎉": True}})
    assert per_event.unmapped == {
        "properties.$$$": "dollars",
        "properties.日本": "kanji",
        "properties.": 0,
        "properties.cart.🎉": True,
    }
    assert "cart" not in per_event.values  # not merged into the parent's column either
    ctx = orjson.dumps({"$$$": "c", "ip": "1.2.3.0"}).decode()
    tracks, per_event = _track({}, context=ctx)
    assert tracks.unmapped == {"context.$$$": "c"}
    assert per_event.unmapped == {"context.$$$": "c"}
    traits = '{"日本": 1, "plan": "pro"}'
    identify = event_rows(record("identify", traits=traits), ORIGIN, audit=False)
    assert [r.unmapped for r in identify] == [{"traits.日本": 1}, {"traits.日本": 1}]


def test_three_or_more_colliding_keys_never_overwrite_each_other() -> None:
    props = {"a b": 1, "a-b": 2, "A_B": 3, "aB": [4], "a": {"b": 5}, "context_ip": 6, "id": 7}
    tracks, per_event = _track(props)
    assert per_event.values["a_b"] == 1  # the first in the object's order
    assert per_event.values["context_ip"] == "1.2.3.0"  # the event's context keeps its column
    assert per_event.unmapped == {
        "properties.a-b": 2,
        "properties.A_B": 3,
        "properties.aB": [4],
        "properties.a.b": 5,
        "properties.context_ip": 6,
        "properties.id": 7,
    }
    assert tracks.unmapped is None


def test_unmapped_of_processors_context_and_properties_share_nothing() -> None:
    rec_unmapped = '{"properties": {"x": 1}}'  # drift's strict mode moves misfits here
    ctx = orjson.dumps({"a": {"b": 1}, "a_b": 2}).decode()
    _, per_event = _track({"a_b": 3, "a": {"b": 4}}, context=ctx, unmapped=rec_unmapped)
    assert per_event.values["context_a_b"] == 1 and per_event.values["a_b"] == 3
    assert per_event.unmapped == {
        "properties": {"x": 1},
        "context.a_b": 2,
        "properties.a.b": 4,
    }


def test_long_source_and_event_names_fit() -> None:
    rows = event_rows(record("track", event="E" * 5000, source="S" * 5000), ORIGIN, audit=True)
    assert {len(r.schema) for r in rows} == {255}
    assert len(rows[1].table) == 255 and rows[0].values["event"] == rows[1].table
    assert len(schema_name("s" * 256)) == 255 and schema_name("s" * 256) != schema_name("s" * 257)


def test_audit_payload_keeps_every_map_as_an_object_even_when_invalid() -> None:
    rec = record(
        "track",
        event="Signed Up",
        properties='{"plan": "pro", "n": [1, 2]}',
        integrations='{"All": false}',
        extra="not json",
        unmapped='{"weird": 1}',
    )
    audit = event_rows(rec, ORIGIN, audit=True)[-1]
    payload = orjson.loads(audit.values["payload"])
    assert payload["properties"] == {"plan": "pro", "n": [1, 2]}
    assert payload["context"]["ip"] == "1.2.3.0"
    assert payload["integrations"] == {"All": False}
    assert payload["extra"] == {"_invalid_json": "not json"}
    assert payload["unmapped"] == {"weird": 1}
    assert payload["receivedAt"] == T0.isoformat()
    assert "traits" not in payload  # a track has properties, not traits
    again = event_rows(rec, ORIGIN, audit=True)[-1]  # the short documents remembered now
    assert again.values["payload"] == audit.values["payload"]
    invalid = event_rows(record("track", integrations="[1]", extra="{"), ORIGIN, audit=True)[-1]
    assert orjson.loads(invalid.values["payload"])["integrations"] == {"_value": [1]}
    assert orjson.loads(invalid.values["payload"])["extra"] == {"_invalid_json": "{"}


def test_schema_change_rows_name_table_column_and_stage() -> None:
    change = {
        "source": "Web App",
        "callType": "track",
        "event": "Order Completed",
        "field": "properties.giftWrap",
        "change": "type_change",
        "previousType": "integer",
        "newType": "string",
        "mode": "evolve",
        "messageId": "m-7",
        "detectedAt": T0,
    }
    origin = Origin("segment.schema-changes", 0, 5)
    row = schema_change_row(change, origin)
    assert (row.schema, row.table, row.kind) == ("web_app", "_segflow_schema_changes", Kind.APPEND)
    v = row.values
    assert (v["table_name"], v["column_name"], v["detected_by"]) == (
        "order_completed",
        "gift_wrap",
        "processors",
    )
    assert (v["previous_type"], v["value_type"], v["detected_at"]) == ("integer", "string", T0)
    # the id follows the content: a re-sent record is the same row, another sighting is not
    assert schema_change_row(dict(change), Origin("x", 1, 9)).values["id"] == v["id"]
    assert schema_change_row({**change, "messageId": "m-8"}, origin).values["id"] != v["id"]
    identify = schema_change_row(
        {**change, "callType": "identify", "event": None, "field": "traits.address.city"}, origin
    )
    assert (identify.values["table_name"], identify.values["column_name"]) == (
        "identifies",
        "address_city",
    )
    # the column a long key lands on, cut as the rows cut it; an empty name lands in _unmapped
    long_key = schema_change_row({**change, "field": "properties." + "k" * 300}, origin)
    _, per_event = _track({"k" * 300: 1})
    assert long_key.values["column_name"] in per_event.values
    empty = schema_change_row({**change, "field": "properties.$$$"}, origin)
    assert empty.values["column_name"] == "_unmapped"
    # a name the table reserves lands in _unmapped there, and is a column where it is not
    page = schema_change_row({**change, "callType": "page", "field": "properties.name"}, origin)
    assert (page.values["table_name"], page.values["column_name"]) == ("pages", "_unmapped")
    name = schema_change_row(
        {**change, "callType": "identify", "event": None, "field": "traits.name"}, origin
    )
    assert name.values["column_name"] == "name"


def test_first_per_id_keeps_the_earliest_record_of_an_id_in_place() -> None:
    track = record("track", event="Order Completed")
    late = event_rows(track, Origin("segment.events.track", 2, 41), audit=True)
    early = event_rows(track, Origin("segment.events.track", 1, 7), audit=True)
    other = event_rows(record("page", messageId="m-2"), ORIGIN, audit=True)
    again = event_rows(track, Origin("segment.events.track", 2, 90), audit=True)
    users = event_rows(record("identify", messageId="m-3"), ORIGIN, audit=False)
    kept, dropped = first_per_id(late + other + early + again + users + users)
    # the partition-1 copy wins over the one read first; its rows stay together, in place
    assert [(r.table, r.values["_segflow_offset"]) for r in kept[:3]] == [
        ("tracks", 7),
        ("order_completed", 7),
        ("audit_log", 7),
    ]
    assert [r.table for r in kept[3:5]] == ["pages", "audit_log"]
    assert [r.table for r in kept[5:]] == ["identifies", "users", "users"]  # merges collapse
    assert dropped == {"tracks": 2, "order_completed": 2, "audit_log": 2, "identifies": 1}


def test_a_name_trait_is_a_column_of_identifies_and_users() -> None:
    """Reserved names are per table: an identify's `name` is the person's, a column of both."""
    traits = {"name": "Ada Lovelace", "category": "vip", "event": "x", "plan": "pro"}
    identifies, users = event_rows(
        record("identify", traits=orjson.dumps(traits).decode()), ORIGIN, audit=False
    )
    for row in (identifies, users):
        assert row.values["name"] == "Ada Lovelace", row.table
        assert row.values["category"] == "vip" and row.values["event"] == "x"
        assert row.unmapped is None, row.table


def test_a_name_trait_is_a_column_of_groups_and_accounts() -> None:
    traits = {"name": "Initech", "employees": 40, "group_id": "spoof"}
    groups, accounts = event_rows(
        record("group", groupId="g-1", traits=orjson.dumps(traits).decode()), ORIGIN, audit=False
    )
    assert groups.values["name"] == accounts.values["name"] == "Initech"
    assert groups.values["group_id"] == "g-1"  # the group's own column keeps its id
    assert groups.unmapped == {"traits.group_id": "spoof"}
    assert accounts.values["group_id"] == "spoof" and accounts.unmapped is None


def test_users_reserve_only_their_own_and_segflows_columns() -> None:
    traits = {"user_id": "t", "id": "clash", "received_at": "r", "uuid_ts": "v"}
    _, users = event_rows(
        record("identify", traits=orjson.dumps(traits).decode()), ORIGIN, audit=False
    )
    assert users.values["id"] == "u-1" and users.values["user_id"] == "t"
    assert users.unmapped == {
        "traits.id": "clash",
        "traits.received_at": "r",
        "traits.uuid_ts": "v",
    }


def test_a_page_keeps_its_own_name_and_category() -> None:
    props = {"name": "spoof", "category": "c", "title": "T", "event": "e"}
    [page] = event_rows(
        record("page", name="Home", category="Docs", properties=orjson.dumps(props).decode()),
        ORIGIN,
        audit=False,
    )
    assert page.values["name"] == "Home" and page.values["category"] == "Docs"
    assert page.values["title"] == "T" and page.values["event"] == "e"
    assert page.unmapped == {"properties.name": "spoof", "properties.category": "c"}


def test_track_properties_keep_event_and_may_take_name() -> None:
    props = {"event": "spoof", "event_text": "t", "name": "Widget", "category": "toys"}
    _, per_event = _track(props)
    assert per_event.values["event"] == "order_completed"
    assert per_event.values["name"] == "Widget" and per_event.values["category"] == "toys"
    assert per_event.unmapped == {"properties.event": "spoof", "properties.event_text": "t"}


def test_a_property_never_takes_a_context_column() -> None:
    """context_* columns are the context's, even where this event's context lacks the key."""
    props = {"context_campaign_name": "x", "context": {"ip": "9.9.9.9"}, "contexts": 1}
    tracks, per_event = _track(props)
    assert tracks.values["context_ip"] == "1.2.3.0"
    assert "context_campaign_name" not in per_event.values
    assert per_event.values["context_ip"] == "1.2.3.0" and per_event.values["contexts"] == 1
    assert per_event.unmapped == {
        "properties.context_campaign_name": "x",
        "properties.context.ip": "9.9.9.9",
    }
    identifies, users = event_rows(
        record("identify", traits='{"context_x": 1}'), ORIGIN, audit=False
    )
    assert identifies.unmapped == {"traits.context_x": 1}
    assert users.values["context_x"] == 1  # users hold no context


def test_an_audit_row_gives_the_garbage_collector_nothing_more_to_scan() -> None:
    """Every buffered record holds an audit row until its flush: its values (the payload a
    JSON document as bytes) are not tracked by the cyclic garbage collector, whose passes over
    the buffers cost the sink CPU per record (a str subclass would be tracked, and its dict)."""
    audit = event_rows(record("track"), ORIGIN, audit=True)[-1]
    assert audit.table == "audit_log"
    assert type(audit.values["payload"]) is bytes
    assert orjson.loads(audit.values["payload"])["messageId"] == "m-1"
    assert not gc.is_tracked(audit.values)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_buffered_audit_rows_hold_their_documents_not_more() -> None:
    """20,000 buffered audit rows of ~1 KB documents take ~20 MB, not the ~8 KB write buffer
    each that the bytes orjson returns keep allocated (~160 MB)."""
    rec = record("track", properties=orjson.dumps({"k": "v" * 600}).decode())
    before = _rss_bytes()
    held = [event_rows(rec, Origin("t", 0, i), audit=True)[-1] for i in range(20_000)]
    grown = _rss_bytes() - before
    assert len(held[-1].values["payload"]) > 600
    assert grown < 80 * 1024 * 1024, f"{grown / 2**20:.0f} MB for 20,000 audit rows"


def _rows_seen(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (r.schema, r.table, r.kind, list(r.values.items()), r.unmapped, r.message_id) for r in rows
    ]


CONTEXTS = [
    '{"ip":"1.2.3.0","library":{"name":"analytics.js","version":"1"},"page":{"path":"/"}}',
    '{"": 1, "a-b": {"c": [1, 2]}, "library": {"name": null}}',  # a value goes to _unmapped
    '{"app": {"name": "x", "build": 7}, "list": [{"k": 1}], "über": "ü", "n": null}',
    '{"ip": "1.2.3.0", "ip ": "again", "IP": "thrice"}',  # colliding columns
    "{not json",
    "[1, 2]",
    "{}",
    "",
]


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("call", ["track", "page", "identify", "group", "alias", "unknown"])
def test_a_repeated_context_gives_the_rows_its_first_sight_gives(call: str, context: str) -> None:
    rows_module._CONTEXTS.clear()
    rows_module._SEEN.clear()
    rec = record(call, context=context, properties='{"p": 1}', traits='{"t": 2}', groupId="g")
    first = _rows_seen(event_rows(rec, ORIGIN, audit=True))
    for _ in range(3):  # noted, remembered, then taken from memory
        again = event_rows(dict(rec, messageId="m-2"), ORIGIN, audit=True)
        assert _rows_seen(event_rows(rec, ORIGIN, audit=True)) == first
    assert again[0].values["id"] == "m-2"
    remembered = context in rows_module._CONTEXTS
    assert remembered == (context not in ("", CONTEXTS[1], CONTEXTS[3]))


def test_remembered_contexts_stay_bounded() -> None:
    for i in range(rows_module._SEEN_MAX + 10):
        text = f'{{"n": {i}}}'
        for _ in range(2):
            event_rows(record("track", context=text), ORIGIN, audit=False)
    assert len(rows_module._SEEN) <= rows_module._SEEN_MAX
    assert len(rows_module._CONTEXTS) <= rows_module._CONTEXTS_MAX
