"""Properties of row mapping over generated Segment events: every table and column name fits
Snowflake, and every leaf value of properties, traits and context lands in a column or in
`_unmapped`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from schemas.naming import child_column, flatten
from schemas.snowflake_limits import MAX_IDENTIFIER_LENGTH
from sinks.snowflake import ddl
from sinks.snowflake.rows import Origin, TableRow, _Namer, _spread, event_rows
from sinks.snowflake.tables import AUDIT_LOG, fixed_columns, reserved_columns
from tests.unit.leaf_oracle import assert_leaves_kept
from tests.unit.segment_strategies import PROPERTY_SETTINGS, free_maps, json_text, keys

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ORIGIN = Origin("segment.events.track", 0, 1)
_QUOTED = re.compile(r'"((?:[^"]|"")+)"')
_GENERATED = re.compile(r"[a-z0-9_]+")

names = st.one_of(
    st.text(max_size=40), st.sampled_from(["Users", "$$$", "日本", ""]), st.text(max_size=600)
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A clean_event record as the sink decodes it, with generated maps and names."""
    return {
        "type": draw(st.sampled_from(["track", "identify", "group", "page", "screen", "alias"])),
        "messageId": "m-1",
        "source": draw(names),
        "anonymousId": "a-1",
        "userId": draw(st.sampled_from(["u-1", None])),
        "groupId": draw(st.sampled_from(["g-1", None])),
        "previousId": "p-1",
        "event": draw(names),
        "name": draw(names),
        "category": None,
        "receivedAt": T0,
        "sentAt": T0 - timedelta(seconds=1),
        "originalTimestamp": T0 - timedelta(seconds=3),
        "timestamp": T0 - timedelta(seconds=2),
        "properties": json_text(draw(free_maps)),
        "traits": json_text(draw(free_maps)),
        "context": json_text(draw(free_maps)),
        "integrations": "{}",
        "channel": "server",
        "extra": "{}",
        "canonicalUserId": "u-1",
        "maskedFields": None,
        "piiKeyVersion": None,
        "unmapped": "{}",
        "processedAt": T0,
    }


def assert_valid_identifier(name: str) -> None:
    """Non-empty, at most 255 characters, and one quoted Snowflake identifier after
    `ddl.quote` (of the same length: generated names are snake_case characters)."""
    assert 0 < len(name) <= MAX_IDENTIFIER_LENGTH, (len(name), name[:40])
    assert _GENERATED.fullmatch(name), name[:40]
    quoted = ddl.quote(name)
    match = _QUOTED.fullmatch(quoted)
    assert match is not None and len(match.group(1).replace('""', '"')) == len(name)


def _maps_of(record: dict[str, Any], row: TableRow) -> list[str]:
    """The free-form maps a row is made from (the roots of its leaves)."""
    call = record["type"]
    if row.table in ("users", "accounts"):
        return ["traits"]
    if call == "track" and row.table == "tracks":
        return ["context"]
    if call in ("track", "page", "screen"):
        return ["context", "properties"]
    if call in ("identify", "group"):
        return ["context", "traits"]
    return ["context"]


def assert_every_leaf_kept(record: dict[str, Any], row: TableRow) -> None:
    """The oracle over each of the row's maps; none of the table's reserved columns may hold a
    property or trait."""
    reserved = reserved_columns(row.table)
    claimed = set(reserved.names) | set(fixed_columns(row.table))
    for root in _maps_of(record, row):
        node = orjson.loads(record[root])
        prefix = "context" if root == "context" else ""
        before = set(claimed)
        assert_leaves_kept(
            node, (root,), prefix, row.values, row.unmapped or {}, claimed, row.table
        )
        if root != "context":
            assert not any(c in reserved for c in claimed - before), (row.table, root)


@PROPERTY_SETTINGS
@given(events())
def test_every_name_fits_and_every_value_is_kept(record: dict[str, Any]) -> None:
    rows = event_rows(record, ORIGIN, audit=True)
    for row in rows:
        assert_valid_identifier(row.schema)
        assert_valid_identifier(row.table)
        for column in row.values:
            assert_valid_identifier(column)
        for sql in ddl.widen_steps(row.schema, row.table, max(row.values, key=len)):
            for name in _QUOTED.findall(sql):
                assert len(name.replace('""', '"')) <= MAX_IDENTIFIER_LENGTH
        if row.table != AUDIT_LOG:
            assert_every_leaf_kept(record, row)


_NAMERS = {t: _Namer(reserved_columns(t)) for t in ("tracks", "pages", "identifies", "users")}


@PROPERTY_SETTINGS
@given(
    free_maps,
    st.sampled_from(["", "context"]),
    st.sets(keys.map(lambda k: child_column("", k))),
    st.sampled_from(sorted(_NAMERS)),
)
def test_the_fast_path_maps_as_the_reference(
    obj: dict[str, Any], prefix: str, taken: set[str], table: str
) -> None:
    """rows._spread (cached per table layout, no generator per level) against
    schemas.naming.flatten with the same table's reserved names."""
    parsed = orjson.loads(json_text(obj))
    target = dict.fromkeys(taken - {""}, "taken")
    unmapped: dict[str, Any] = {}
    namer = _NAMERS[table]
    _spread(target, parsed, prefix, unmapped, (None, "properties"), namer)
    columns, reference_unmapped = flatten(
        parsed, prefix, ("properties",), taken - {""}, reserved=namer.reserved
    )
    assert {k: v for k, v in target.items() if k not in taken} == columns
    assert unmapped == reference_unmapped
