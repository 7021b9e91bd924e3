"""Compiled Avro writers and readers for segflow's flat record schemas.

``fastavro.schemaless_writer`` and ``schemaless_reader`` take microseconds a raw_event record
(bench/results/ingest-hot-path.md); every event is written by the edge and read and written
again by the processors. This
module turns a flat record schema (strings, ints, longs, timestamp-micros, booleans and doubles,
``["null", X]`` unions of them and arrays of strings: what segflow's schemas use) into one
generated Python function per schema, which writes the same bytes as fastavro, framed with the
single-object header (marker + writer fingerprint), and reads them back into the same dicts,
resolving an older writer version into the newest reader version (fields the reader lacks are
skipped, fields the writer lacks take their defaults).

:class:`schemas.codec.AvroCodec` uses these functions for every schema they accept and fastavro
for any other; a schema outside the subset is refused at compile time (``FatalError``), never
written or read wrongly. tests/unit/schemas/test_avro_compiled.py checks the bytes and the
decoded records against fastavro.
"""

from __future__ import annotations

import copy
import functools
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from schemas.errors import CodecError, FatalError
from schemas.native import optional_extension

if TYPE_CHECKING:
    from schemas.codec import SchemaVersion

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SMALL = 1 << 15

Writer = Callable[[dict[str, Any]], bytes]
Reader = Callable[[bytes], dict[str, Any]]


# -- varints and timestamps -----------------------------------------------------------------


def _varint_slow(n: int) -> bytes:
    """Avro's zig-zag variable-length encoding of a long."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [_varint_slow(i) for i in range(_SMALL)]
# 14 bits of a zig-zagged value as two varint bytes: continued, and (_LAST14) ending the varint
_NEXT14 = [bytes(((c & 0x7F) | 0x80, (c >> 7) | 0x80)) for c in range(1 << 14)]
_LAST14 = [bytes(((c & 0x7F) | 0x80, c >> 7)) for c in range(1 << 14)]


def varint(n: int) -> bytes:
    """Zig-zag varint: small non-negative values (lengths) from a table; 8-byte values
    (timestamp-micros of the years 1971-3111) from four 14-bit tables; the rest through the
    loop."""
    if 0 <= n < _SMALL:
        return _SMALL_VARINTS[n]
    if not -(1 << 63) <= n < (1 << 63):
        raise CodecError(f"long out of range: {n}")
    z = (n << 1) ^ (n >> 63)
    if (1 << 49) <= z < (1 << 56):
        return b"".join(
            (_NEXT14[z & 0x3FFF], _NEXT14[(z >> 14) & 0x3FFF], _NEXT14[(z >> 28) & 0x3FFF],
             _LAST14[z >> 42])
        )  # fmt: skip
    return _varint_slow(n)


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """(zig-zag decoded long, position after it) of the varint at `pos`."""
    b = data[pos]
    if b < 128:
        return (b >> 1) ^ -(b & 1), pos + 1
    z = b & 0x7F
    shift = 7
    pos += 1
    while b & 0x80:
        if shift > 63:
            raise CodecError("varint longer than 10 bytes")
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        shift += 7
    if z >> 64:
        raise CodecError("varint longer than 64 bits")
    return (z >> 1) ^ -(z & 1), pos


def micros(value: datetime | int) -> int:
    """timestamp-micros of an aware datetime (an int passes through, as in fastavro)."""
    if type(value) is int:
        return value
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise CodecError("timestamp-micros needs a timezone-aware datetime")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(n: int) -> datetime:
    """The aware UTC datetime of timestamp-micros `n`, as fastavro reads it (timedelta's
    positional form: about half the cost of the keyword one, the same value)."""
    return _EPOCH + timedelta(0, 0, n)


# -- the supported subset -------------------------------------------------------------------

_STRING, _LONG, _TS, _BOOL, _DOUBLE, _STRINGS = (
    "string",
    "long",
    "timestamp",
    "boolean",
    "double",
    "strings",
)


def _kind_of(schema: Any) -> str:
    """The compiled kind of a (non-union) field type; FatalError outside the subset."""
    base: Any
    logical: Any
    if isinstance(schema, str):
        base, logical = schema, None
    elif isinstance(schema, dict):
        base, logical = schema.get("type"), schema.get("logicalType")
    else:
        raise FatalError(f"unsupported Avro type {schema!r}")
    if base == "string" and logical is None:
        return _STRING
    if base in ("long", "int") and logical is None:
        return _LONG
    if base == "long" and logical == "timestamp-micros":
        return _TS
    if base == "boolean" and logical is None:
        return _BOOL
    if base == "double" and logical is None:
        return _DOUBLE
    if base == "array" and isinstance(schema, dict) and schema.get("items") == "string":
        return _STRINGS
    raise FatalError(f"unsupported Avro type {schema!r} for the compiled codec")


def _field_kind(ftype: Any, name: str) -> tuple[str, int | None]:
    """(kind, index of null in a [null, X] union or None for a plain type)."""
    if isinstance(ftype, list):
        if len(ftype) != 2 or "null" not in ftype:
            raise FatalError(f"field {name}: only [null, X] unions are supported")
        null_index = ftype.index("null")
        return _kind_of(ftype[1 - null_index]), null_index
    return _kind_of(ftype), None


def _record_fields(version: SchemaVersion) -> list[dict[str, Any]]:
    schema = version.schema
    if schema.get("type") != "record":
        raise FatalError(f"{version.kind} v{version.version} is not a record schema")
    fields: list[dict[str, Any]] = schema["fields"]
    return fields


# -- the native extension ---------------------------------------------------------------

#: the C writer and reader (schemas/_avro_native.c), None when the extension was not built
_native = optional_extension("schemas._avro_native")
NATIVE_AVAILABLE = _native is not None
_NATIVE_KINDS = {_STRING: 0, _LONG: 1, _TS: 2, _STRINGS: 3, _BOOL: 4, _DOUBLE: 5}
_NATIVE_MAX_FIELDS = 256


# -- writer ---------------------------------------------------------------------------------

_DOUBLE_STRUCT = struct.Struct("<d")
_NO_VALUE = object()


def _write_long(v: Any) -> bytes:
    if type(v) is not int:
        raise CodecError(f"expected an int, got {type(v).__name__}")
    return varint(v)


def _write_bool(v: Any) -> bytes:
    if type(v) is not bool:
        raise CodecError(f"expected a bool, got {type(v).__name__}")
    return b"\x01" if v else b"\x00"


def _write_double(v: Any) -> bytes:
    return _DOUBLE_STRUCT.pack(float(v))


def _write_strings(v: Any) -> bytes:
    if not isinstance(v, list | tuple):
        raise CodecError(f"expected a list of strings, got {type(v).__name__}")
    if not v:
        return b"\x00"
    parts = [varint(len(v))]
    for item in v:
        b = item.encode()
        parts.append(varint(len(b)))
        parts.append(b)
    parts.append(b"\x00")
    return b"".join(parts)


_PREFIXED = 4096  # lengths below this get their union byte and varint from one table


def _prefixed_lengths(branch: bytes) -> list[bytes]:
    """The union branch byte followed by the varint of each length below _PREFIXED."""
    return [branch + _SMALL_VARINTS[n] for n in range(_PREFIXED)]


_PREFIXED_BY_BRANCH = {b"\x00": _prefixed_lengths(b"\x00"), b"\x02": _prefixed_lengths(b"\x02")}


def _write_statements(kind: str, i: int, branch: bytes | None) -> list[str]:
    """Statements writing `v`, the value of field `i`, into locals: ``a<i>`` (the union byte if
    any, then the value's varint or fixed bytes) and, for strings, ``b<i>`` (their UTF-8 bytes).
    `branch`: the union byte of the value's branch, None for a plain type."""
    a, b = f"a{i}", f"b{i}"
    if kind == _STRING:
        table, limit = ("SMALL", "SMALL_N") if branch is None else (f"P{i}", "P_N")
        tail = "varint(n)" if branch is None else f"{branch!r} + varint(n)"
        return [
            f"{b} = v.encode()",
            f"n = len({b})",
            f"{a} = {table}[n] if n < {limit} else {tail}",
        ]
    if kind == _TS:
        # One request's events share receivedAt (and often sentAt): remember the last one, as
        # one tuple so that threads sharing the writer never pair a value with another's bytes.
        written = "varint(micros(v))" if branch is None else f"{branch!r} + varint(micros(v))"
        return [
            f"m = M{i}[0]",
            "if m[0] is not v:",
            f"    m = (v, {written})",
            f"    M{i}[0] = m",
            f"{a} = m[1]",
        ]
    writer = {
        _LONG: "_write_long",
        _BOOL: "_write_bool",
        _DOUBLE: "_write_double",
        _STRINGS: "_write_strings",
    }[kind]
    return [f"{a} = {writer}(v)" if branch is None else f"{a} = {branch!r} + {writer}(v)"]


def compile_writer(version: SchemaVersion, *, native: bool = True) -> Writer:
    """A function record -> framed Avro bytes for `version` (a flat record schema).

    Writes exactly what ``fastavro.schemaless_writer`` writes after the single-object header;
    a missing field takes its default, a value that does not fit raises CodecError. The
    generated function keeps each field's bytes in locals and joins them once at the end (no
    list appends per value). With `native` (and the extension built) the same fields are
    written in C (:func:`_native_writer`); the generated function is the fallback and the
    reference the tests hold the C writer to.
    """
    lines = ["def write(r):", "    get = r.get"]
    env: dict[str, Any] = {
        "HEADER": MAGIC + version.fingerprint,
        "_write_long": _write_long,
        "_write_bool": _write_bool,
        "_write_double": _write_double,
        "_write_strings": _write_strings,
        "varint": varint,
        "SMALL": _SMALL_VARINTS,
        "SMALL_N": _SMALL,
        "P_N": _PREFIXED,
        "micros": micros,
    }
    pieces = ["HEADER"]
    for i, field in enumerate(_record_fields(version)):
        name, ftype = field["name"], field["type"]
        default = f"D{i}"
        env[default] = field.get("default")
        env[f"M{i}"] = [(_NO_VALUE, b"")]
        access = f"get({name!r}, {default})" if "default" in field else f"r[{name!r}]"
        kind, null_index = _field_kind(ftype, name)
        pieces.append(f"a{i}")
        if kind == _STRING:
            pieces.append(f"b{i}")
        lines.append(f"    v = {access}")
        if null_index is None:
            lines += ["    " + line for line in _write_statements(kind, i, None)]
            continue
        branch = varint(1 - null_index)
        env[f"P{i}"] = _PREFIXED_BY_BRANCH[branch]
        lines += [
            "    if v is None:",
            f"        a{i} = {varint(null_index)!r}",
            *([f"        b{i} = b''"] if kind == _STRING else []),
            "    else:",
            *["        " + line for line in _write_statements(kind, i, branch)],
        ]
    lines.append(f"    return b''.join(({', '.join(pieces)}))")
    if native and _native is not None:  # the fields are checked: no Python writer needed
        return _native_writer(version)
    code = "\n".join(lines)
    exec(compile(code, f"<avro writer {version.kind} v{version.version}>", "exec"), env)
    compiled: Writer = env["write"]

    def write(record: dict[str, Any]) -> bytes:
        try:
            return compiled(record)
        except CodecError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            raise CodecError(
                f"record does not fit {version.kind} v{version.version}: {exc!r}"
            ) from exc

    return write


# -- reader ---------------------------------------------------------------------------------


def _native_writer(version: SchemaVersion) -> Writer:
    """The C writer of the fields compile_writer checked: per field its key, kind, the index of
    null in its union (-1: none) and its default if it has one."""
    fields = []
    for field in _record_fields(version):
        kind, null_index = _field_kind(field["type"], field["name"])
        fields.append(
            (
                field["name"],
                _NATIVE_KINDS[kind],
                -1 if null_index is None else null_index,
                "default" in field,
                field.get("default"),
            )
        )
    what = f"{version.kind} v{version.version}"
    writer: Writer = _native.Writer(MAGIC + version.fingerprint, fields, CodecError, micros, what)
    return writer


def _native_reader(
    w_fields: list[dict[str, Any]],
    r_fields: list[dict[str, Any]],
    r_by_name: dict[str, dict[str, Any]],
    micros: bool,
    what: str,
) -> Reader:
    """The C reader of the program compile_reader checked: per writer field its kind, the index
    of null in its union (-1: none) and its slot (its index, -1: skipped); per reader field its
    key with its slot or its default (a list or dict default made fresh for each record)."""
    fields = []
    slot_of: dict[str, int] = {}
    for i, field in enumerate(w_fields):
        kind, null_index = _field_kind(field["type"], field["name"])
        slot = i if field["name"] in r_by_name else -1
        if slot >= 0:
            slot_of[field["name"]] = slot
        fields.append((_NATIVE_KINDS[kind], -1 if null_index is None else null_index, slot))
    out: list[tuple[str, int, Any, Callable[[], Any] | None]] = []
    for field in r_fields:
        name = field["name"]
        if name in slot_of:
            out.append((name, slot_of[name], None, None))
            continue
        default = field["default"]
        if isinstance(default, list | dict):
            out.append((name, -1, None, functools.partial(copy.deepcopy, default)))
        else:
            out.append((name, -1, default, None))
    reader: Reader = _native.Reader(HEADER_LEN, micros, fields, out, CodecError, what)
    return reader


def _read_strings(data: bytes, pos: int) -> tuple[list[str], int]:
    out: list[str] = []
    while True:
        b = data[pos]
        if b < 128:  # one byte: the usual count
            count = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            count, pos = read_long(data, pos)
        if count == 0:
            return out, pos
        if count < 0:  # a block with its byte size
            count = -count
            _, pos = read_long(data, pos)
        for _ in range(count):
            b = data[pos]
            if b < 128:
                n = (b >> 1) ^ -(b & 1)
                pos += 1
            else:
                n, pos = read_long(data, pos)
            end = pos + n
            if n < 0 or end > len(data):
                raise CodecError("string runs past the end of the record")
            out.append(data[pos:end].decode())
            pos = end


def _read_micros(target: str) -> list[str]:
    """Statements reading a timestamp-micros varint into `target` (``"_"``: skip it): the
    8-byte form of the years 1971-3111 decoded in a few word operations (the 7-bit groups of the
    bytes packed together pairwise) when all 8 are there, any other through read_long."""
    return [
        "x = from_bytes(data[pos : pos + 8], 'little')",
        # a record ending inside the varint reads fewer than 8 bytes, which look terminated
        "if x & 0x8080808080808080 == 0x0080808080808080 and pos + 8 <= len(data):",
        "    x &= 0x7F7F7F7F7F7F7F7F",
        "    x = (x & 0x007F007F007F007F) | ((x >> 1) & 0x3F803F803F803F80)",
        "    x = (x & 0x00003FFF00003FFF) | ((x >> 2) & 0x0FFFC0000FFFC000)",
        "    x = (x & 0x0FFFFFFF) | ((x >> 4) & 0x00FFFFFFF0000000)",
        f"    {target or '_'} = (x >> 1) ^ -(x & 1)",
        "    pos += 8",
        "else:",
        f"    {target or '_'}, pos = read_long(data, pos)",
    ]


def _read_statements(
    kind: str, target: str, indent: str, memo: str, micros: bool = False
) -> list[str]:
    """Statements reading one value of `kind` at ``pos`` into `target` (None: skip it)."""
    into = target or "_"
    if kind == _STRING:
        body = [
            "b = data[pos]",
            "if b < 128:",
            "    pos += 1",
            "    n = (b >> 1) ^ -(b & 1)",
            "elif data[pos + 1] < 128:  # 64 to 8191 bytes",
            "    n = (b & 0x7F) | (data[pos + 1] << 7)",
            "    n = (n >> 1) ^ -(n & 1)",
            "    pos += 2",
            "else:",
            "    n, pos = read_long(data, pos)",
            "end = pos + n",
            "if n < 0 or end > size:",
            "    raise CodecError('string runs past the end of the record')",
        ]
        body += [f"{into} = data[pos:end].decode()"] if target else []
        body += ["pos = end"]
    elif kind == _LONG:
        body = [f"{into}, pos = read_long(data, pos)"]
    elif kind == _TS:
        body = _read_micros(target if micros else "n")
        if target and not micros:
            # consecutive records often carry the same timestamp: reuse the (immutable) datetime
            body += [
                f"m = {memo}[0]",
                "if m[0] == n:",
                f"    {target} = m[1]",
                "else:",
                f"    {target} = from_micros(n)",
                f"    {memo}[0] = (n, {target})",
            ]
    elif kind == _STRINGS:
        body = [f"{into}, pos = read_strings(data, pos)"]
    else:  # boolean and double are written, never read by segflow: refuse rather than guess
        raise FatalError(f"the compiled reader does not read {kind}")
    return [indent + line for line in body]


def compile_reader(
    writer: SchemaVersion, reader: SchemaVersion, *, micros: bool = False, native: bool = True
) -> Reader:
    """A function framed bytes -> record, reading `writer`'s body into `reader`'s shape.

    The result equals ``fastavro.schemaless_reader(body, writer, reader)``; corrupt or truncated
    input raises CodecError. Fields must keep their type between versions (what segflow's
    schema evolution does: fields are added with defaults); other resolutions are refused.
    With `micros`, timestamp-micros values stay ints (microseconds since the epoch, what the
    writers accept as well) instead of becoming datetimes. With `native` (and the extension
    built), the same program runs in C (:func:`_native_reader`); the generated Python function
    is the fallback and the reference the tests hold the C reader to.
    """
    w_fields = _record_fields(writer)
    r_fields = _record_fields(reader)
    r_by_name = {f["name"]: f for f in r_fields}
    w_names = {f["name"] for f in w_fields}
    env: dict[str, Any] = {
        "read_long": read_long,
        "from_bytes": int.from_bytes,
        "read_strings": _read_strings,
        "from_micros": from_micros,
        "CodecError": CodecError,
    }
    lines = ["def read(data):", f"    pos = {HEADER_LEN}", "    size = len(data)"]
    for i, field in enumerate(w_fields):
        name = field["name"]
        kind, null_index = _field_kind(field["type"], name)
        target = ""
        if name in r_by_name:
            if r_by_name[name]["type"] != field["type"]:
                raise FatalError(
                    f"{writer.kind} field {name} changes type between v{writer.version} "
                    f"and v{reader.version}: not supported by the compiled reader"
                )
            target = f"v{i}"
        env[f"M{i}"] = [(None, None)]
        if null_index is None:
            lines += _read_statements(kind, target, "    ", f"M{i}", micros)
            continue
        lines += [
            "    b = data[pos]",
            "    if b < 128:",
            "        pos += 1",
            "        b = (b >> 1) ^ -(b & 1)",
            "    else:",
            "        b, pos = read_long(data, pos)",
            f"    if b == {null_index}:",
            f"        {target or '_'} = None",
            f"    elif b == {1 - null_index}:",
            *_read_statements(kind, target, "        ", f"M{i}", micros),
            "    else:",
            "        raise CodecError('union branch out of range')",
        ]
    items: list[str] = []
    for j, field in enumerate(r_fields):
        name = field["name"]
        if name in w_names:
            index = next(i for i, f in enumerate(w_fields) if f["name"] == name)
            items.append(f"{name!r}: v{index}")
            continue
        if "default" not in field:
            raise FatalError(
                f"{reader.kind} v{reader.version} field {name} has no default to read "
                f"v{writer.version} records"
            )
        default = field["default"]
        if isinstance(default, list | dict):
            items.append(f"{name!r}: {default!r}")  # a fresh object per record
        else:
            env[f"D{j}"] = default
            items.append(f"{name!r}: D{j}")
    what = f"{reader.kind} body"
    if native and _native is not None and len(w_fields) <= _NATIVE_MAX_FIELDS:
        # the pair is checked (the statements above refuse what no reader reads)
        return _native_reader(w_fields, r_fields, r_by_name, micros, what)
    lines.append("    return {" + ", ".join(items) + "}")
    code = "\n".join(lines)
    label = f"<avro reader {writer.kind} v{writer.version}->v{reader.version}>"
    if micros:
        label = label[:-1] + " micros>"
    exec(compile(code, label, "exec"), env)
    compiled: Reader = env["read"]

    def read(data: bytes) -> dict[str, Any]:
        try:
            return compiled(data)
        except CodecError as exc:
            raise CodecError(f"corrupt {what}: {exc.reason}", raw=data) from exc
        except (IndexError, UnicodeDecodeError, OverflowError, ValueError) as exc:
            raise CodecError(f"corrupt {what}: {type(exc).__name__}: {exc}", raw=data) from exc

    return read
