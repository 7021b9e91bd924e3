"""The compiled writers and readers write and read exactly what fastavro does.

The codec itself now runs on these functions, so every comparison here is against fastavro
directly: the same bytes for every record written, the same record for every body read (also
resolving older versions, and for corrupt bodies: both refuse, or both read the same).
"""

from __future__ import annotations

import io
import random
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest

from schemas.avro_compiled import (
    HEADER_LEN,
    MAGIC,
    compile_reader,
    compile_writer,
    micros,
    read_long,
    varint,
)
from schemas.codec import (
    CLEAN_EVENT,
    IDENTITY_LINK,
    RAW_EVENT,
    SCHEMA_CHANGE,
    SUPPRESSION,
    AvroCodec,
    SchemaVersion,
)
from schemas.errors import CodecError, FatalError

CODEC = AvroCodec()
WRITE = compile_writer(CODEC.latest(RAW_EVENT))
READ = compile_reader(CODEC.latest(RAW_EVENT), CODEC.latest(RAW_EVENT))
NOW = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def fastavro_encode(version: SchemaVersion, rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, version.parsed, rec)
    return MAGIC + version.fingerprint + buf.getvalue()


def fastavro_decode(writer: SchemaVersion, reader: SchemaVersion, data: bytes) -> Any:
    return fastavro.schemaless_reader(
        io.BytesIO(data[HEADER_LEN:]), writer.parsed, None if reader is writer else reader.parsed
    )


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
def test_same_bytes_and_records_as_fastavro(rec: dict[str, Any]) -> None:
    latest = CODEC.latest(RAW_EVENT)
    written = WRITE(rec)
    assert written == fastavro_encode(latest, rec)
    assert CODEC.encode(RAW_EVENT, rec) == written
    assert READ(written) == fastavro_decode(latest, latest, written)
    assert CODEC.decode(RAW_EVENT, written) == READ(written)


def test_missing_fields_with_defaults_take_them() -> None:
    rec = record()
    del rec["channel"], rec["extra"], rec["traits"]
    assert WRITE(rec) == fastavro_encode(CODEC.latest(RAW_EVENT), rec)


def other_kinds() -> list[tuple[str, dict[str, Any]]]:
    clean = {
        **record(userId="u-1", sentAt=NOW),
        "canonicalUserId": "u-1",
        "maskedFields": ["traits.email:hash", "context.ip:truncate", "ü:mask"],
        "piiKeyVersion": "v2",
        "unmapped": '{"properties": {"x": 1}}',
        "processedAt": NOW,
    }
    return [
        (CLEAN_EVENT, clean),
        (CLEAN_EVENT, {**clean, "maskedFields": []}),
        (CLEAN_EVENT, {k: v for k, v in clean.items() if k != "maskedFields"}),
        (CLEAN_EVENT, {**clean, "maskedFields": [f"f{i}:drop" for i in range(300)]}),
        (
            IDENTITY_LINK,
            {
                "source": "web",
                "identifier": "a-1",
                "identifierType": "anonymous_id",
                "canonicalUserId": "u-1",
                "messageId": "m-1",
                "linkedAt": NOW,
            },
        ),
        (
            SCHEMA_CHANGE,
            {
                "source": "web",
                "callType": "track",
                "event": None,
                "field": "properties.x",
                "change": "new_property",
                "previousType": None,
                "newType": "integer",
                "mode": "evolve",
                "messageId": "m-1",
                "detectedAt": 1_714_564_800_000_000,
            },
        ),
        (
            SUPPRESSION,
            {"userId": "u", "identifiers": ["a", "b"], "reason": None, "suppressedAt": NOW},
        ),
    ]


@pytest.mark.parametrize(("kind", "rec"), other_kinds())
def test_every_kind_is_compiled_and_matches_fastavro(kind: str, rec: dict[str, Any]) -> None:
    latest = CODEC.latest(kind)
    written = compile_writer(latest)(rec)
    assert written == fastavro_encode(latest, rec)
    assert CODEC.encode(kind, rec) == written
    read = compile_reader(latest, latest)
    assert read(written) == fastavro_decode(latest, latest, written)
    assert CODEC.decode(kind, written) == read(written)


def test_older_versions_resolve_like_fastavro() -> None:
    old, new = CODEC.versions[RAW_EVENT][0], CODEC.latest(RAW_EVENT)
    assert old.version < new.version
    rec = record()
    del rec["channel"], rec["extra"]
    data = fastavro_encode(old, rec)
    resolved = compile_reader(old, new)(data)
    assert resolved == fastavro_decode(old, new, data)
    assert resolved["channel"] is None and resolved["extra"] == "{}"
    assert CODEC.decode(RAW_EVENT, data) == resolved


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception:  # comparing whether both sides refuse
        return "error", None


def test_corrupt_bodies_are_refused_or_read_exactly_as_fastavro_reads_them() -> None:
    latest = CODEC.latest(RAW_EVENT)
    good = WRITE(record(userId="ü-1", sentAt=NOW, channel="server"))
    rnd = random.Random(4)
    samples = [good[:cut] for cut in range(HEADER_LEN, len(good))]
    for _ in range(2000):
        b = bytearray(good)
        for _ in range(rnd.randint(1, 3)):
            b[rnd.randrange(HEADER_LEN, len(b))] = rnd.randrange(256)
        samples.append(bytes(b))
    for data in samples:
        ours = _outcome(READ, data)
        theirs = _outcome(fastavro_decode, latest, latest, data)
        if ours[0] == "error":
            with pytest.raises(CodecError) as info:
                READ(data)
            assert info.value.raw == data
            if theirs[0] == "ok":
                # fastavro takes a negative union index as a Python index (-1: the last
                # branch); the compiled reader refuses it, and only that
                assert "union branch out of range" in info.value.reason, data
                continue
        assert ours == theirs, data


def test_the_codec_reads_memoryviews_and_bytearrays() -> None:
    data = WRITE(record())
    views: list[Any] = [memoryview(data), bytearray(data)]  # what some clients hand over
    for view in views:
        assert CODEC.decode(RAW_EVENT, view) == READ(data)


def test_remembered_timestamps_stay_right_across_threads() -> None:
    """The last timestamp each field wrote or read is remembered; threads never mix them."""
    stamps = [NOW + timedelta(microseconds=i) for i in range(64)]
    expected = {t: fastavro_encode(CODEC.latest(RAW_EVENT), record(receivedAt=t)) for t in stamps}
    errors: list[str] = []

    def hammer(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(3000):
            t = rnd.choice(stamps)
            data = WRITE(record(receivedAt=t))
            if data != expected[t] or READ(data)["receivedAt"] != t:
                errors.append(str(t))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


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
    with pytest.raises(FatalError):  # the reader reads only what segflow's schemas hold
        compile_reader(*[version([{"name": "b", "type": "boolean"}])] * 2)
    old = version([{"name": "s", "type": "string"}])
    with pytest.raises(FatalError):  # a type change between versions is left to fastavro
        compile_reader(old, version([{"name": "s", "type": ["null", "string"]}]))
    with pytest.raises(FatalError):  # a new field without a default cannot be read from old data
        compile_reader(
            old, version([{"name": "s", "type": "string"}, {"name": "t", "type": "long"}])
        )


def test_varint_fast_paths_match_the_loop() -> None:
    from schemas.avro_compiled import _varint_slow

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
    latest = CODEC.latest(RAW_EVENT)
    for rec in (a, b, a, a, b, record(sentAt=NOW), record()):
        data = WRITE(rec)
        assert data == fastavro_encode(latest, rec)
        assert READ(data) == fastavro_decode(latest, latest, data)


def test_read_long_reads_what_varint_writes() -> None:
    for n in (0, 1, -1, 63, -64, 64, 1 << 40, -(1 << 62), (1 << 63) - 1, -(1 << 63)):
        data = varint(n) + b"tail"
        assert read_long(data, 0) == (n, len(data) - 4)
    with pytest.raises(CodecError):
        read_long(b"\xff" * 11, 0)
    with pytest.raises(IndexError):
        read_long(b"\x80", 0)


def test_micros_readers_keep_timestamps_as_the_ints_the_writers_take() -> None:
    latest = CODEC.latest(RAW_EVENT)
    rec = record(sentAt=NOW + timedelta(seconds=2))
    data = WRITE(rec)
    as_micros = CODEC.decode(RAW_EVENT, data, micros=True)
    as_datetimes = fastavro_decode(latest, latest, data)
    for name, value in as_datetimes.items():
        if isinstance(value, datetime):
            assert as_micros[name] == micros(value), name
        else:
            assert as_micros[name] == value, name
    assert WRITE(as_micros) == data  # the ints write the same bytes back
    old = CODEC.versions[RAW_EVENT][0]
    old_data = fastavro_encode(old, {k: v for k, v in rec.items() if k not in ("channel", "extra")})
    resolved = compile_reader(old, latest, micros=True)(old_data)
    assert resolved["receivedAt"] == micros(NOW) and resolved["extra"] == "{}"


def test_timestamps_and_lengths_of_every_varint_width_read_as_fastavro_reads_them() -> None:
    """The readers' inline fast paths (8-byte timestamps, 2-byte string lengths) against
    fastavro: widths either side of each path, negative and random values."""
    latest = CODEC.latest(RAW_EVENT)
    read_micros = compile_reader(latest, latest, micros=True)
    rnd = random.Random(11)
    stamps = [0, 1, -1, 63, 64, -65, (1 << 48) - 1, 1 << 48, (1 << 55) - 1, 1 << 55, -(1 << 55)]
    first, last = micros(datetime(1, 1, 1, tzinfo=UTC)), micros(datetime(9999, 1, 1, tzinfo=UTC))
    stamps += [rnd.randrange(first, last) for _ in range(200)]
    stamps += [rnd.randrange(-(1 << 55), 1 << 55) for _ in range(200)]
    stamps += [micros(datetime(y, 1, 1, tzinfo=UTC)) for y in (1, 1900, 1971, 2024, 3111, 9999)]
    lengths = [0, 1, 63, 64, 65, 8191, 8192, 20000]
    for i, n in enumerate(stamps):
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=n)
        text = "é" * (lengths[i % len(lengths)] // 2) + "x" * (lengths[i % len(lengths)] % 2)
        data = WRITE(record(receivedAt=at, sentAt=at, userId=text, maskedFields=[text] * (i % 3)))
        assert READ(data) == fastavro_decode(latest, latest, data), n
        assert read_micros(data)["receivedAt"] == n


def test_a_record_cut_inside_its_last_timestamp_is_refused() -> None:
    """clean_event ends with a timestamp (processedAt): a record cut one byte short leaves seven
    bytes with their continuation bits set, which must not read as a whole 8-byte timestamp."""
    latest = CODEC.latest(CLEAN_EVENT)
    clean = dict(other_kinds()[0][1])
    data = compile_writer(latest)(clean)
    assert all(b & 0x80 for b in data[-8:-1]) and data[-1] < 0x80  # an 8-byte varint at the end
    for micros_ in (False, True):
        with pytest.raises(CodecError):
            compile_reader(latest, latest, micros=micros_)(data[:-1])
