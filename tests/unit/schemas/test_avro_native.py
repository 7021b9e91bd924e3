"""The C reader (schemas/_avro_native.c) reads exactly what the generated Python reader reads.

test_avro_compiled.py holds the readers the codec uses (the C one when it is built) to fastavro;
here the C reader is held to the generated Python reader directly, on valid records of every
kind and version, on corrupt and truncated bodies (both refuse, or both read the same record),
and checked for what only C can get wrong: references leaked or freed, and bounds.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from schemas.avro_compiled import (
    HEADER_LEN,
    NATIVE_AVAILABLE,
    compile_reader,
    compile_writer,
    varint,
)
from schemas.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec
from schemas.errors import CodecError
from tests.unit.schemas.test_avro_compiled import CASES, NOW, other_kinds, record

CODEC = AvroCodec()
RAW = CODEC.latest(RAW_EVENT)
CLEAN = CODEC.latest(CLEAN_EVENT)


def readers(writer: Any, reader: Any, micros: bool = False) -> tuple[Any, Any]:
    native = compile_reader(writer, reader, micros=micros, native=True)
    python = compile_reader(writer, reader, micros=micros, native=False)
    assert type(native).__name__ == "Reader" and type(python).__name__ == "function"
    return native, python


def outcome(read: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", read(data)
    except CodecError as exc:
        assert exc.raw == data
        assert exc.reason.startswith("corrupt ")
        return "error", None


def test_the_native_reader_is_built() -> None:
    """`make venv` (pip install -e .) compiles it; a machine without a C compiler installs
    segflow without it and reads with the generated Python code."""
    assert NATIVE_AVAILABLE, "schemas/_avro_native.c was not built: run make venv with gcc"


@pytest.mark.parametrize("micros", [False, True])
def test_every_record_of_every_kind_reads_the_same(micros: bool) -> None:
    samples = [(RAW_EVENT, rec) for rec in CASES] + other_kinds()
    for kind, rec in samples:
        latest = CODEC.latest(kind)
        data = compile_writer(latest)(rec)
        native, python = readers(latest, latest, micros)
        got = native(data)
        assert got == python(data)
        assert list(got) == list(python(data))  # the reader's field order
        assert CODEC.decode(kind, data, micros=micros) == got


@pytest.mark.parametrize("micros", [False, True])
def test_older_versions_resolve_the_same_with_fresh_defaults(micros: bool) -> None:
    old = CODEC.versions[RAW_EVENT][0]
    rec = record()
    del rec["channel"], rec["extra"]
    data = compile_writer(old)(rec)
    native, python = readers(old, RAW, micros)
    first = native(data)
    assert first == python(data) and list(first) == list(python(data))
    assert first["channel"] is None and first["extra"] == "{}"
    # a list default (clean_event's maskedFields) is a new list in every record
    fields = [f for f in CLEAN.schema["fields"] if f["name"] != "maskedFields"]
    older = type(CLEAN)(CLEAN.kind, 0, {**CLEAN.schema, "fields": fields}, None, b"\0" * 8)
    clean = {k: v for k, v in other_kinds()[0][1].items() if k != "maskedFields"}
    data = compile_writer(older)(clean)
    read = compile_reader(older, CLEAN, micros=micros, native=True)
    a, b = read(data), read(data)
    assert a["maskedFields"] == [] and a["maskedFields"] is not b["maskedFields"]


def test_corrupt_and_truncated_bodies_are_refused_or_read_the_same() -> None:
    rnd = random.Random(7)
    for kind, rec in [(RAW_EVENT, record(userId="ü-1", sentAt=NOW)), *other_kinds()[:2]]:
        latest = CODEC.latest(kind)
        good = compile_writer(latest)(rec)
        samples = [good[:cut] for cut in range(len(good))]
        for _ in range(3000):
            b = bytearray(good)
            for _ in range(rnd.randint(1, 4)):
                b[rnd.randrange(HEADER_LEN, len(b))] = rnd.randrange(256)
            if rnd.random() < 0.2:
                del b[rnd.randrange(HEADER_LEN, len(b)) :]
            samples.append(bytes(b))
        for micros in (False, True):
            native, python = readers(latest, latest, micros)
            for data in samples:
                assert outcome(native, data) == outcome(python, data), data


def test_values_no_reader_may_take_are_refused_with_their_reason() -> None:
    good = compile_writer(RAW)(record())
    native, _ = readers(RAW, RAW)
    body = good[HEADER_LEN:]
    n = len(varint(5)) + 5  # "track"
    cases = {
        # the type's length as an 11-byte varint, then as one beyond 64 bits
        b"\x80" * 10 + b"\x01": "varint longer than 10 bytes",
        b"\xff" * 9 + b"\x7f": "varint longer than 64 bits",
        varint(-3): "string runs past the end of the record",
        varint(1 << 40): "string runs past the end of the record",
        b"\x0a\xff\xfe\xfd\xfc\xfb": "UnicodeDecodeError",
    }
    for prefix, reason in cases.items():
        data = good[:HEADER_LEN] + prefix + body[n:]
        with pytest.raises(CodecError) as info:
            native(data)
        assert reason in info.value.reason and info.value.raw == data
        with pytest.raises(CodecError):
            compile_reader(RAW, RAW, native=False)(data)
    with pytest.raises(CodecError, match="shorter than its header"):
        native(good[: HEADER_LEN - 1])
    with pytest.raises(TypeError):
        native(bytearray(good))  # the codec hands it bytes


def test_timestamps_outside_the_calendar_are_refused_as_python_refuses_them() -> None:
    latest = CODEC.latest(RAW_EVENT)
    write = compile_writer(latest)
    native, python = readers(latest, latest)
    first = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
    last = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
    for n in (first, last, first - 1, last + 1, -(1 << 63), (1 << 63) - 1, 0, -1):
        data = write(record(receivedAt=n))
        ours, theirs = outcome(native, data), outcome(python, data)
        assert ours == theirs, n
        if first <= n <= last:
            assert ours[1]["receivedAt"] == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
                microseconds=n
            )
            assert ours[1]["receivedAt"].tzinfo is UTC
        else:
            with pytest.raises(CodecError, match="OverflowError"):
                native(data)


def test_every_day_of_four_centuries_reads_as_python_reads_it() -> None:
    """The C date arithmetic (days since 1970 to a calendar date) over 400 years, leap days and
    the century rule included, plus the first and last days Python holds."""
    write = compile_writer(RAW)
    native, python = readers(RAW, RAW)
    day = 86_400_000_000
    start = -719_162 * day  # 0001-01-01
    days = [*range(-146_097 // 2, 146_097 // 2, 7), -719_162, 2_932_896, 59, 60, 11_016]
    for d in days:
        n = d * day + (d * 7919 % day)
        data = write(record(receivedAt=n, timestamp=start + (d % 1000) * day))
        assert native(data) == python(data), d


def retained(call: Any, good: Any, others: list[Any], bad: Any) -> int:
    """Bytes still allocated after 2,000 rounds of `call` on `good`, each of `others` and `bad`
    (refused), measured after a first such run has warmed the memos, interned keys and caches."""

    def run() -> None:
        for _ in range(2000):
            call(good)
            for other in others:
                call(other)
            with pytest.raises(CodecError):
                call(bad)

    run()
    gc.collect()
    tracemalloc.start()
    try:
        run()
        gc.collect()
        return int(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()


def test_no_reference_is_leaked_on_records_read_or_refused() -> None:
    native, _ = readers(CLEAN, CLEAN)
    good = compile_writer(CLEAN)(other_kinds()[0][1])
    stamps = [compile_writer(CLEAN)({**other_kinds()[0][1], "processedAt": i}) for i in range(50)]
    grown = retained(native, good, stamps, good[:-5])
    assert grown < 64 * 1024, grown  # 106k records read: no growth


# -- the writer ------------------------------------------------------------------------------


def writers(version: Any) -> tuple[Any, Any]:
    native = compile_writer(version, native=True)
    python = compile_writer(version, native=False)
    assert type(native).__name__ == "Writer" and type(python).__name__ == "function"
    return native, python


def written(write: Any, rec: Any) -> tuple[str, Any]:
    try:
        return "ok", write(rec)
    except CodecError as exc:
        return "error", exc.reason


class Stamp(datetime):
    """A datetime subclass (what some client libraries hand over)."""


def test_every_record_of_every_kind_writes_the_same_bytes() -> None:
    samples = [(RAW_EVENT, rec) for rec in CASES] + other_kinds()
    rnd = random.Random(5)
    for i in range(300):
        n = rnd.choice([rnd.randrange(-(1 << 63), 1 << 63), rnd.randrange(-(1 << 20), 1 << 20)])
        text = "é" * (i * 37 % 9000) + "🎉" * (i % 3)
        samples.append((RAW_EVENT, record(receivedAt=n, sentAt=n if i % 2 else None, event=text)))
    tz = timezone(timedelta(hours=5, minutes=30))
    samples += [
        (RAW_EVENT, record(timestamp=NOW.astimezone(tz))),
        (RAW_EVENT, record(timestamp=Stamp(2024, 2, 29, 1, 2, 3, 4, tzinfo=UTC))),
        (RAW_EVENT, record(timestamp=datetime(1, 1, 1, tzinfo=UTC))),
        (RAW_EVENT, record(timestamp=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))),
        (RAW_EVENT, {k: v for k, v in record().items() if k not in ("channel", "extra")}),
    ]
    for kind, rec in samples:
        native, python = writers(CODEC.latest(kind))
        assert native(rec) == python(rec), rec
        assert native(rec) == python(rec), rec  # again: through the remembered timestamps


def test_records_that_do_not_fit_are_refused_as_the_python_writer_refuses_them() -> None:
    native, python = writers(RAW)
    missing = {k: v for k, v in record().items() if k != "messageId"}
    bad = [
        missing,
        record(type=None),
        record(type=b"track"),
        record(userId=5),
        record(userId="\ud800"),  # a lone surrogate: no UTF-8 for it
        record(receivedAt=datetime(2024, 1, 1)),  # naive
        record(receivedAt=True),
        record(receivedAt=1 << 63),
        record(receivedAt="2024-01-01T00:00:00Z"),
        record(receivedAt=None),
        record(sentAt=1.5),
    ]
    for rec in bad:
        ours, theirs = written(native, rec), written(python, rec)
        assert ours[0] == theirs[0] == "error", rec
        assert ours[1] == theirs[1], rec
    clean_native, clean_python = writers(CLEAN)
    clean = other_kinds()[0][1]
    for masked in (["a", 5], "a,b", ("a", "b"), [], None):
        rec = {**clean, "maskedFields": masked}
        assert written(clean_native, rec) == written(clean_python, rec), masked
    with pytest.raises(CodecError):
        native([("type", "track")])


def test_the_writer_leaks_no_reference() -> None:
    native, _ = writers(CLEAN)
    clean = other_kinds()[0][1]
    recs = [{**clean, "processedAt": NOW + timedelta(microseconds=i)} for i in range(50)]
    grown = retained(native, clean, recs, {**clean, "maskedFields": ["a", 5]})
    assert grown < 64 * 1024, grown
