"""The staged file of a flush, checked value by value against a plain reference.

Varied and hostile clean events (nulls, numbers past 38 digits, non-ASCII and colliding keys,
nested arrays, invalid JSON text, timestamps at the edges of the range, every call type,
repeated ids) go the sink's way: encoded, handed to `RecordIntake`, deduplicated, planned and
staged. Every staged value must be what the row's own value converts to for its staged type,
and the events must share staged rows exactly as they do when `stage_units` takes its slow path
(rows rebuilt without their `made_with` link)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import orjson
import pyarrow.parquet as pq
import pytest
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message
from prometheus_client import CollectorRegistry

from runtime.rules import load_rules
from schemas.codec import CLEAN_EVENT, AvroCodec
from schemas.timestamps import parse_timestamp
from sinks.snowflake.batcher import Batcher
from sinks.snowflake.evolution import plan
from sinks.snowflake.intake import RecordIntake
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.progress import Progress
from sinks.snowflake.rows import JsonText, TableRow, collapse, first_per_id
from sinks.snowflake.settings import SinkSettings
from sinks.snowflake.staging import (
    AUDIT_FLAG,
    AUDIT_PAYLOAD,
    AUDIT_TYPE,
    SCHEMA_COLUMN,
    TABLE_COLUMN,
    TRACKS_FLAG,
    TRACKS_UNMAPPED,
    UNMAPPED,
    StagedUnit,
    group_rows,
    stage_units,
    to_text,
    unit_stage_types,
    write_units,
)
from sinks.snowflake.tables import BOOLEAN, FLOAT, NUMBER, TIMESTAMP, VARCHAR, VARIANT

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TOPIC = "segment.clean.web"
EDGES = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]
MAPS = [
    {"n": None, "big": 10**40, "neg": -(10**38), "small": 10**37, "f": 1.5, "b": True},
    {"ts": "2026-01-05T12:00:00Z", "badts": "0000-01-01T00:00:00Z", "late": "9999-12-31T23:59Z"},
    {"über straße": "ü", "日本": [1, [2, [3]]], "": "empty", "a-b": 1, "a_b": 2, "A B": 3},
    {"nested": {"x": {"y": {"z": [None, {"k": 1}]}}}, "id": "clash", "event": "e", "name": "n"},
    {"n": "text now", "big": 1, "f": "x", "b": 0, "ts": 5, "arr": [], "obj": {}},
    {"revenue": 1e308, "tiny": 5e-324, "neg0": -0.0, "x" * 300: "long", "y" * 300: "long"},
    {"_segflow_offset": 1, "uuid_ts": "t", "received_at": "r", "_unmapped": {"q": 1}},
    {"context_ip": "c", "event_text": "t", "category": "c", "group_id": "g"},
]
INVALID = ["{not json", "[1,2]", "null", '"text"', "1", "", '{"a":NaN}']
CALLS = ["track", "page", "screen", "identify", "group", "alias", "unknown"]


def record(call: str, i: int, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "type": call,
        "messageId": f"m-{i}",
        "source": "Web App",
        "anonymousId": f"a-{i % 7}",
        "userId": f"u-{i % 5}",
        "previousId": "p-1",
        "groupId": f"g-{i % 3}",
        "event": f"Event {i % 3} ü",
        "name": "Home",
        "category": "Docs",
        "receivedAt": T0 + timedelta(microseconds=i),
        "sentAt": T0,
        "originalTimestamp": T0 - timedelta(seconds=3),
        "timestamp": T0 - timedelta(seconds=2),
        "properties": "{}",
        "traits": "{}",
        "context": '{"ip":"1.2.3.0","library":{"name":"analytics.js"},"page":{"path":"/"}}',
        "integrations": '{"All":true}',
        "channel": "browser" if i % 2 else None,
        "extra": "{}",
        "canonicalUserId": f"u-{i % 5}" if i % 3 else None,
        "maskedFields": ["context.ip:truncate"] if i % 2 else [],
        "piiKeyVersion": "v1" if i % 2 else None,
        "unmapped": "{}",
        "processedAt": T0,
    }
    rec.update(over)
    return rec


def records() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    i = 0
    for doc in MAPS:
        text = json.dumps(doc, ensure_ascii=False)
        for call in CALLS:
            i += 1
            out.append(record(call, i, properties=text, traits=text))
            out.append(record(call, i + 1000, properties=text, traits=text, context=text))
    for j, at in enumerate(EDGES):
        i += 1
        out.append(
            record(
                "track" if j % 2 else "identify",
                i,
                receivedAt=at,
                sentAt=at if j % 2 else None,
                originalTimestamp=None if j % 2 else at,
                timestamp=at,
                processedAt=at,
            )
        )
    for bad in INVALID:
        for call in ("track", "identify", "page"):
            i += 1
            out.append(
                record(
                    call,
                    i,
                    properties=bad,
                    traits=bad,
                    context=bad or "{}",
                    integrations=bad or "{}",
                    extra=bad or "{}",
                    unmapped=bad or "{}",
                )
            )
    i += 1
    out.append(record("track", i, unmapped='{"properties.x":1}', extra='{"weird":[1,2]}'))
    out.append(record("track", 1, properties='{"repeated": 1}'))  # an id again
    out.append(record("identify", 3, traits='{"name": "N"}'))
    out.append(record("identify", i + 1, userId=None, traits='{"t": 1}'))
    out.append(record("track", i + 2, source="", event=""))
    return out


def message(offset: int, value: bytes) -> MagicMock:
    msg = MagicMock(spec_set=Message)
    msg.error.return_value = None
    msg.topic.return_value = TOPIC
    msg.partition.return_value = offset % 2
    msg.offset.return_value = offset
    msg.value.return_value = value
    msg.timestamp.return_value = (TIMESTAMP_NOT_AVAILABLE, -1)
    return msg


def buffered_rows() -> list[TableRow]:
    """The rows the sink's intake buffers for the records, as a flush takes them."""
    codec = AvroCodec()
    batcher = Batcher(10**9, 10**12, 10**6, 10**12)
    for partition in (0, 1):
        batcher.assign(TOPIC, partition, -1)
    metrics = SinkMetrics(CollectorRegistry())
    intake = RecordIntake(SinkSettings(), load_rules(None), batcher, Progress(), metrics, None)
    intake.dead_letters = MagicMock()
    for offset, rec in enumerate(records()):
        intake.handle(message(offset, codec.encode(CLEAN_EVENT, rec)), 0.0)
    intake.dead_letters.send.assert_not_called()
    batch = batcher.take()
    assert batch is not None
    return batch.rows


def _expected(value: Any, stype: str) -> Any:
    """A row's value as the staged file must hold it (read back by pyarrow)."""
    if value is None:
        return None
    if stype == NUMBER:
        return Decimal(value)
    if stype == FLOAT:
        return float(value)
    if stype == BOOLEAN:
        return bool(value)
    if stype == TIMESTAMP:
        return parse_timestamp(value)
    if stype == VARIANT:
        if isinstance(value, JsonText):
            return str(value)
        return value.decode() if type(value) is bytes else orjson.dumps(value).decode()
    assert stype == VARCHAR
    return to_text(value)


def _unmapped(row: TableRow | None) -> str | None:
    return None if row is None or not row.unmapped else orjson.dumps(row.unmapped).decode()


def _reference(unit: StagedUnit, stage_types: dict[str, str]) -> dict[str, Any]:
    row = unit.row
    out = {
        SCHEMA_COLUMN: unit.schema,
        TABLE_COLUMN: unit.primary.table if unit.primary else None,
        TRACKS_FLAG: unit.tracks is not None,
        AUDIT_FLAG: unit.audit is not None,
        UNMAPPED: _unmapped(unit.primary),
        TRACKS_UNMAPPED: _unmapped(unit.tracks),
        AUDIT_TYPE: unit.audit.values["type"] if unit.audit else None,
        AUDIT_PAYLOAD: _expected(unit.audit.values["payload"], VARIANT) if unit.audit else None,
    }
    for name, stype in stage_types.items():
        if name not in out:
            out[name] = _expected(row.values.get(name), stype)
    return {name.upper(): value for name, value in out.items()}


def _shape(units: list[StagedUnit]) -> list[tuple[Any, ...]]:
    def key(r: TableRow | None) -> Any:
        return None if r is None else (r.table, r.message_id, r.values.get("_segflow_offset"))

    return [(u.schema, key(u.primary), key(u.tracks), key(u.audit)) for u in units]


def _layouts(rows: list[TableRow]) -> list[dict[tuple[str, str], dict[str, str]]]:
    """No tables yet; the tables the rows make; those with columns that disagree (staged as
    text), columns off the ladder (misfits) and an audit_log with a column of its own."""
    made = plan(rows, {}).columns
    odd = {key: dict(cols) for key, cols in made.items()}
    for (_, table), cols in odd.items():
        if table == "tracks":
            cols.update(received_at=VARCHAR, sent_at=VARCHAR, big=VARCHAR)
        elif table == "audit_log":
            cols.update(_segflow_offset=FLOAT, someone_elses=VARCHAR)
        elif table == "pages":
            cols.update(big=NUMBER, ts=TIMESTAMP, b=BOOLEAN, f="OTHER", n="OTHER")
    return [{}, made, odd]


@pytest.mark.parametrize("layout", [0, 1, 2], ids=["new_tables", "steady", "disagreeing"])
def test_every_staged_value_is_its_rows_value_converted(tmp_path: Path, layout: int) -> None:
    rows, _ = first_per_id(collapse(buffered_rows()))
    p = plan(rows, _layouts(rows)[layout])
    stage_types = unit_stage_types(group_rows(p.rows).keys(), p.columns)

    units = stage_units(p.rows, p.columns)
    slow = stage_units([replace(r, made_with=None) for r in p.rows], p.columns)
    assert _shape(units) == _shape(slow)
    assert any(u.primary and u.tracks for u in units)

    path = tmp_path / "flush.parquet"
    assert write_units(path, units, p.columns, stage_types) == len(units)
    staged = pq.read_table(path).to_pylist()
    keys = ("_SEGFLOW_SCHEMA", "_SEGFLOW_TABLE", "_SEGFLOW_TRACKS", "_SEGFLOW_AUDIT", "ID")
    by_key = {(*map(r.get, keys), r["_SEGFLOW_OFFSET"]): r for r in staged}
    assert len(by_key) == len(units)
    for unit in units:
        want = _reference(unit, stage_types)
        assert by_key[(*map(want.get, keys), want["_SEGFLOW_OFFSET"])] == want


def test_dedupe_by_made_with_links_drops_what_dedupe_by_values_drops() -> None:
    """first_per_id takes a linked row's id from its message id, an unlinked row's from its
    values: the same rows are kept, in the same places, and the same are counted dropped."""
    rows = collapse(buffered_rows())
    fast, dropped = first_per_id(rows)
    slow, slow_dropped = first_per_id([replace(r, made_with=None) for r in rows])
    assert dropped == slow_dropped and sum(dropped.values()) > 0
    assert _shape(stage_units(fast, {})) == _shape(stage_units(slow, {}))
    assert [(r.table, r.message_id, r.values) for r in fast] == [
        (r.table, r.message_id, r.values) for r in slow
    ]
