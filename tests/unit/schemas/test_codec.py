from __future__ import annotations

import io
from datetime import UTC, datetime

import fastavro
import pytest

from schemas.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec
from schemas.errors import CodecError
from schemas.topics import CALL_TYPES

NOW = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)


def raw(call_type: str) -> dict[str, object]:
    record: dict[str, object] = {
        "type": call_type,
        "messageId": f"m-{call_type}",
        "source": "web",
        "anonymousId": "anon-1",
        "userId": "user-1",
        "receivedAt": NOW,
        "sentAt": NOW,
        "originalTimestamp": NOW,
        "timestamp": NOW,
        "properties": '{"revenue": 12.5}',
        "traits": '{"plan": "pro"}',
        "context": '{"ip": "10.1.2.3"}',
        "integrations": "{}",
        "channel": "server",
        "extra": "{}",
    }
    extra = {
        "track": {"event": "Order Completed"},
        "page": {"name": "Home", "category": "Docs"},
        "screen": {"name": "Settings"},
        "group": {"groupId": "acme"},
        "alias": {"previousId": "anon-1"},
    }
    record.update(extra.get(call_type, {}))
    return record


@pytest.mark.parametrize("call_type", CALL_TYPES)
def test_round_trip_every_call_type(call_type: str) -> None:
    codec = AvroCodec()
    record = raw(call_type)
    decoded = codec.decode(RAW_EVENT, codec.encode(RAW_EVENT, record))
    for key, value in record.items():
        assert decoded[key] == value, key


def test_clean_event_round_trip() -> None:
    codec = AvroCodec()
    record = {
        **raw("identify"),
        "canonicalUserId": "user-1",
        "maskedFields": ["traits.email:hash"],
        "piiKeyVersion": "v1",
        "unmapped": '{"x": 1}',
        "processedAt": NOW,
    }
    decoded = codec.decode(CLEAN_EVENT, codec.encode(CLEAN_EVENT, record))
    assert {k: decoded[k] for k in record} == record
    assert decoded["groupId"] is None  # fields absent from the input take their defaults


def test_older_version_is_read_with_the_newest() -> None:
    codec = AvroCodec()
    assert codec.latest(RAW_EVENT).version >= 2
    record = raw("track")
    del record["channel"], record["extra"]
    old_bytes = codec.encode(RAW_EVENT, record, version=1)
    decoded = codec.decode(RAW_EVENT, old_bytes)
    assert decoded["messageId"] == "m-track"
    assert decoded["channel"] is None  # defaults of the fields version 2 added
    assert decoded["extra"] == "{}"


def test_every_version_is_backward_compatible() -> None:
    """Each newer version reads data written with every older one (Avro resolution)."""
    codec = AvroCodec()
    for versions in codec.versions.values():
        newest = versions[-1]
        for older in versions[:-1]:
            buf = io.BytesIO()
            sample = {
                f["name"]: _sample(f["type"]) for f in older.schema["fields"] if "default" not in f
            }
            fastavro.schemaless_writer(buf, older.parsed, sample)
            buf.seek(0)
            fastavro.schemaless_reader(buf, older.parsed, newest.parsed)


def _sample(avro_type: object) -> object:
    if avro_type == "string":
        return "x"
    if isinstance(avro_type, dict) and avro_type.get("logicalType") == "timestamp-micros":
        return NOW
    raise AssertionError(f"add a sample for {avro_type}")


@pytest.mark.parametrize(
    "data",
    [b"", b"{}", b"\xc3\x01" + b"\x00" * 8 + b"abc", b"\xc3\x01\x01", b"\x00\x00\x00\x00\x01ab"],
)
def test_malformed_bytes_raise_a_typed_error(data: bytes) -> None:
    with pytest.raises(CodecError) as info:
        AvroCodec().decode(RAW_EVENT, data)
    assert info.value.raw == data
    assert info.value.code == "undecodable"


def test_truncated_body_raises_codec_error() -> None:
    codec = AvroCodec()
    good = codec.encode(RAW_EVENT, raw("track"))
    with pytest.raises(CodecError):
        codec.decode(RAW_EVENT, good[:20])


def test_wrong_kind_is_refused() -> None:
    codec = AvroCodec()
    data = codec.encode(RAW_EVENT, raw("track"))
    with pytest.raises(CodecError, match="expected a clean_event"):
        codec.decode(CLEAN_EVENT, data)


def test_record_that_does_not_fit_raises_codec_error() -> None:
    with pytest.raises(CodecError):
        AvroCodec().encode(RAW_EVENT, {"type": "track"})
