"""Avro codec for every record segflow writes to Kafka.

Framing is Avro's single-object encoding: two marker bytes ``C3 01``, then the 8-byte
little-endian CRC-64-AVRO fingerprint of the *writer* schema, then the Avro body. Every schema
version ever shipped stays in ``schemas/avro/`` (``<kind>.v<N>.avsc``), so a record written with
any of them is read by its own writer schema and resolved to the newest version of its kind.

Records are written and read by functions compiled from each schema
(:mod:`schemas.avro_compiled`: the same bytes and records as fastavro, faster:
bench/results/ingest-hot-path.md);
fastavro serves any schema outside their subset.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from schemas.avro_compiled import (
    HEADER_LEN,
    MAGIC,
    Reader,
    Writer,
    compile_reader,
    compile_writer,
)
from schemas.avro_compiled import micros as to_micros
from schemas.errors import CodecError, FatalError

RAW_EVENT = "raw_event"
CLEAN_EVENT = "clean_event"
IDENTITY_LINK = "identity_link"
SCHEMA_CHANGE = "schema_change"
SUPPRESSION = "suppression"


@dataclass(frozen=True)
class SchemaVersion:
    kind: str
    version: int
    schema: dict[str, Any]
    parsed: Any
    fingerprint: bytes


def _load_versions() -> dict[str, list[SchemaVersion]]:
    kinds: dict[str, list[SchemaVersion]] = {}
    folder = resources.files("schemas").joinpath("avro")
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".avsc"):
            continue
        kind, version = name[: -len(".avsc")].rsplit(".v", 1)
        schema = json.loads(entry.read_text(encoding="utf-8"))
        parsed = parse_schema(schema, _write_hint=False)
        canonical = to_parsing_canonical_form(parsed)
        fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))[::-1]
        kinds.setdefault(kind, []).append(
            SchemaVersion(kind, int(version), schema, parse_schema(schema), fp)
        )
    for versions in kinds.values():
        versions.sort(key=lambda v: v.version)
    return kinds


class AvroCodec:
    """Encodes with the newest version of a kind; decodes any version into the newest."""

    def __init__(self) -> None:
        self.versions = _load_versions()
        self._by_fingerprint = {v.fingerprint: v for vs in self.versions.values() for v in vs}
        self._latest = {kind: vs[-1] for kind, vs in self.versions.items()}
        self._writers: dict[tuple[str, int], Writer | None] = {}
        for vs in self.versions.values():
            for v in vs:
                try:
                    self._writers[(v.kind, v.version)] = compile_writer(v)
                except FatalError:
                    self._writers[(v.kind, v.version)] = None  # fastavro writes it
        # writer fingerprint -> compiled reader into the newest version (None: fastavro reads),
        # with timestamps as datetimes and as micros
        self._readers: dict[bytes, Reader | None] = {}
        self._micros_readers: dict[bytes, Reader | None] = {}
        for v in self._by_fingerprint.values():
            for micros, readers in ((False, self._readers), (True, self._micros_readers)):
                try:
                    readers[v.fingerprint] = compile_reader(v, self._latest[v.kind], micros=micros)
                except FatalError:
                    readers[v.fingerprint] = None

    def latest(self, kind: str) -> SchemaVersion:
        return self._latest[kind]

    def encode(self, kind: str, record: dict[str, Any], version: int | None = None) -> bytes:
        """Encode `record` with the newest schema of `kind` (or an explicit older `version`)."""
        writer = self._latest[kind]
        if version is not None:
            writer = next(v for v in self.versions[kind] if v.version == version)
        compiled = self._writers.get((kind, writer.version))
        if compiled is not None:
            return compiled(record)
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(writer.fingerprint)
        try:
            fastavro.schemaless_writer(buf, writer.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(f"record does not fit {kind} v{writer.version}: {exc}") from exc
        return buf.getvalue()

    def decode(self, kind: str, data: bytes | None, *, micros: bool = False) -> dict[str, Any]:
        """Decode framed bytes written with any known version of `kind` into its newest shape.

        Timestamps are aware UTC datetimes, or with `micros` ints (microseconds since the
        epoch; :meth:`encode` takes either), which spares a hot path building datetimes.
        """
        if data is None:
            raise CodecError("empty record (tombstone) where a value was expected", raw=None)
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise CodecError("not a segflow Avro record (missing single-object marker)", raw=data)
        writer = self._by_fingerprint.get(bytes(data[2:HEADER_LEN]))
        if writer is None:
            raise CodecError("written with an unknown schema fingerprint", raw=data)
        if writer.kind != kind:
            raise CodecError(f"expected a {kind} record, got {writer.kind}", raw=data)
        compiled = (self._micros_readers if micros else self._readers).get(writer.fingerprint)
        if compiled is not None:
            return compiled(data if type(data) is bytes else bytes(data))
        reader = self._latest[kind]
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data[HEADER_LEN:]),
                writer.parsed,
                None if reader is writer else reader.parsed,
            )
        except Exception as exc:  # fastavro raises many types on truncated or corrupt input
            raise CodecError(f"corrupt {kind} body: {type(exc).__name__}: {exc}", raw=data) from exc
        if not isinstance(record, dict):
            raise CodecError(f"{kind} body did not decode to a record", raw=data)
        if micros:
            for name, value in record.items():
                if isinstance(value, datetime):
                    record[name] = to_micros(value)
        return record
