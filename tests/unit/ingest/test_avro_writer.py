"""The compiled raw_event writer writes the codec's bytes exactly, and the codec reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ingest.avro_writer import compile_writer, micros, varint
from schemas.codec import RAW_EVENT, AvroCodec, SchemaVersion
from schemas.errors import CodecError, FatalError

CODEC = AvroCodec()
WRITE = compile_writer(CODEC.latest(RAW_EVENT))
NOW = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "track",
        "messageId": "m-1",
        "source": "web",
        "anonymousId": "a-1",
        "userId": None,
        "previousId": None,
        "groupId": None,
        "event": "Order Completed",
        "name": None,
        "category": None,
        "receivedAt": NOW,
        "sentAt": None,
        "originalTimestamp": NOW - timedelta(seconds=3),
        "timestamp": NOW,
        "properties": '{"revenue": 9.5}',
        "traits": "{}",
        "context": "{}",
        "integrations": "{}",
        "channel": None,
        "extra": "{}",
    }
    base.update(overrides)
    return base


CASES = [
    record(),
    record(userId="ü-ñ-中文-🎉", properties='{"k": "' + "x" * 70_000 + '"}'),
    record(type="alias", previousId="p", userId="u", anonymousId=None, event=None),
    record(sentAt=NOW, channel="server", name="", category="c"),
    record(timestamp=datetime(1, 1, 1, tzinfo=UTC), originalTimestamp=None),
    record(timestamp=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    record(receivedAt=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    record(timestamp=NOW.astimezone(timezone(timedelta(hours=-7)))),
]


@pytest.mark.parametrize("rec", CASES)
def test_same_bytes_as_the_codec_and_readable_by_it(rec: dict[str, Any]) -> None:
    written = WRITE(rec)
    assert written == CODEC.encode(RAW_EVENT, rec)
    assert CODEC.decode(RAW_EVENT, written) == CODEC.decode(RAW_EVENT, CODEC.encode(RAW_EVENT, rec))


def test_missing_fields_with_defaults_take_them() -> None:
    rec = record()
    del rec["channel"], rec["extra"], rec["traits"]
    assert WRITE(rec) == CODEC.encode(RAW_EVENT, rec)


@pytest.mark.parametrize(
    "bad",
    [
        record(type=None),
        record(receivedAt=datetime(2024, 1, 1)),  # naive
        record(userId=5),
        {k: v for k, v in record().items() if k != "messageId"},
    ],
)
def test_records_that_do_not_fit_raise_codec_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(CodecError):
        WRITE(bad)


def test_varint_and_micros() -> None:
    assert [varint(n) for n in (0, -1, 1, 63, 64, -65)] == [
        b"\x00",
        b"\x01",
        b"\x02",
        b"\x7e",
        b"\x80\x01",
        b"\x81\x01",
    ]
    assert varint(1 << 40) == varint(1 << 40)
    with pytest.raises(CodecError):
        varint(1 << 63)
    assert micros(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == 1_000_005


def test_schemas_outside_the_supported_subset_are_refused() -> None:
    def version(fields: list[dict[str, Any]]) -> SchemaVersion:
        schema = {"type": "record", "name": "X", "fields": fields}
        return SchemaVersion("x", 1, schema, None, b"\x00" * 8)

    with pytest.raises(FatalError):
        compile_writer(version([{"name": "m", "type": {"type": "map", "values": "string"}}]))
    with pytest.raises(FatalError):
        compile_writer(version([{"name": "u", "type": ["null", "string", "long"]}]))
    write = compile_writer(
        version(
            [
                {"name": "b", "type": "boolean"},
                {"name": "d", "type": "double"},
                {"name": "n", "type": ["string", "null"], "default": "z"},
            ]
        )
    )
    assert write({"b": True, "d": 1.5, "n": None}) == (
        b"\xc3\x01" + b"\x00" * 8 + b"\x01" + b"\x00\x00\x00\x00\x00\x00\xf8\x3f" + b"\x02"
    )


def test_varint_fast_paths_match_the_loop() -> None:
    from ingest.avro_writer import _varint_slow

    samples = [
        0,
        1,
        -1,
        32767,
        32768,
        -32768,
        (1 << 48),
        (1 << 48) - 1,
        (1 << 55) - 1,
        1 << 55,
        -(1 << 55),
        1_714_564_800_000_000,
        -(1 << 63),
        (1 << 63) - 1,
    ]
    samples += [micros(datetime(y, 1, 1, tzinfo=UTC)) for y in (1, 1900, 1971, 2024, 3000, 9999)]
    for n in samples:
        assert varint(n) == _varint_slow(n), n


def test_remembered_timestamps_never_leak_between_records() -> None:
    a = record()
    b = record(receivedAt=NOW + timedelta(seconds=1), timestamp=NOW - timedelta(days=400))
    for rec in (a, b, a, a, b, record(sentAt=NOW), record()):
        assert WRITE(rec) == CODEC.encode(RAW_EVENT, rec)
