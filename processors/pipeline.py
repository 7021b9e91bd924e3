"""The per-event function of the processors: a decoded raw record in, an outcome out.

dedupe -> PII masking -> identity stitching -> drift routing, with no I/O: the state it reads
and changes is in memory and every change is returned as a changelog write, so the Faust agent
only has to decode, call :meth:`Pipeline.process` and send what comes back, in one transaction.
Masking runs before anything is built for a clean topic; drift sees masked values (the types
that reach the warehouse) and reports field names only, never values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from processors.dedupe import Deduper
from processors.drift import DRIFT_TABLE, DriftDetector, FieldChange
from processors.masking import DOCUMENT_ROOTS, Masker
from processors.state import ChangelogWrite
from processors.stitching import IdentityGraph, StitchResult
from schemas.errors import RecordError
from schemas.topics import CALL_TYPES

_PASSTHROUGH = (
    "type",
    "messageId",
    "source",
    "anonymousId",
    "userId",
    "previousId",
    "groupId",
    "event",
    "name",
    "category",
    "receivedAt",
    "sentAt",
    "originalTimestamp",
    "timestamp",
    "integrations",
    "channel",
)


@dataclass(slots=True)
class Outcome:
    """What one raw record became. `clean` is None for a duplicate."""

    call_type: str
    clean: dict[str, Any] | None
    links: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    refused: str | None = None
    lateness_s: float = 0.0

    @property
    def duplicate(self) -> bool:
        return self.clean is None


def record_key(record: dict[str, Any]) -> str | None:
    """The most anonymous identifier (alias: previousId; else anonymousId; else userId)."""
    if record.get("type") == "alias" and record.get("previousId"):
        return str(record["previousId"])
    return record.get("anonymousId") or record.get("userId")


def _load_map(record: dict[str, Any], name: str) -> dict[str, Any]:
    text = record.get(name) or "{}"
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"{name} is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(value, dict):
        raise RecordError(f"{name} is not a JSON object", code="invalid_json")
    return value


class Pipeline:
    """Dedupe, masking, stitching and drift over partition-local state."""

    def __init__(
        self,
        deduper: Deduper,
        masker: Masker,
        graph: IdentityGraph,
        drift: DriftDetector,
        mode: str,
    ) -> None:
        self.deduper = deduper
        self.masker = masker
        self.graph = graph
        self.drift = drift
        self.mode = mode

    def process(
        self,
        raw: dict[str, Any],
        key: bytes | None,
        partition: int,
        now: datetime,
        writes: list[ChangelogWrite],
    ) -> Outcome:
        """Process one decoded raw_event record; raises RecordError for a record it cannot."""
        call_type = raw.get("type")
        if call_type not in CALL_TYPES:
            raise RecordError(f"unknown call type {call_type!r}", code="invalid_record")
        message_id = raw.get("messageId")
        if not message_id:
            raise RecordError("record without messageId", code="invalid_record")
        clock = now.timestamp()
        received_at: datetime = raw["receivedAt"]
        lateness = (received_at - raw["timestamp"]).total_seconds()
        if self.deduper.is_duplicate(partition, message_id, clock):
            return Outcome(call_type, None, lateness_s=lateness)

        doc = {name: _load_map(raw, name) for name in DOCUMENT_ROOTS}
        masked, hashed = self.masker.apply(doc, raw)

        key_text = key.decode("utf-8", "replace") if key is not None else record_key(raw)
        stitched: StitchResult = self.graph.stitch(
            call_type,
            key_text,
            raw.get("anonymousId"),
            raw.get("userId"),
            raw.get("previousId"),
            partition,
            clock,
            writes,
        )
        new_known: list[tuple[str, str]] = []
        drift = self.drift.check(raw["source"], call_type, raw.get("event"), doc, new_known)
        for fkey, ftype in new_known:
            writes.append(ChangelogWrite(DRIFT_TABLE, partition, fkey.encode(), ftype.encode()))
        self.deduper.remember(partition, message_id, clock, writes)

        touched = {m.split(".", 1)[0] for m in masked}
        touched.update(drift.unmapped)
        clean: dict[str, Any] = {k: raw.get(k) for k in _PASSTHROUGH}
        for name in ("properties", "traits", "context", "integrations", "extra"):
            clean[name] = orjson.dumps(doc[name]).decode() if name in touched else raw.get(name)
        clean["canonicalUserId"] = stitched.canonical_user_id
        clean["maskedFields"] = masked
        clean["piiKeyVersion"] = self.masker.key_version if hashed else None
        clean["unmapped"] = orjson.dumps(drift.unmapped).decode() if drift.unmapped else "{}"
        clean["processedAt"] = now

        return Outcome(
            call_type,
            clean,
            links=[
                {
                    "source": raw["source"],
                    "identifier": link.identifier,
                    "identifierType": link.identifier_type,
                    "canonicalUserId": link.canonical_user_id,
                    "messageId": message_id,
                    "linkedAt": received_at,
                }
                for link in stitched.links
            ],
            changes=[self._change(raw, c, now) for c in drift.changes],
            masked=masked,
            refused=stitched.refused,
            lateness_s=lateness,
        )

    def _change(self, raw: dict[str, Any], change: FieldChange, now: datetime) -> dict[str, Any]:
        return {
            "source": raw["source"],
            "callType": raw["type"],
            "event": raw.get("event"),
            "field": change.field,
            "change": change.change,
            "previousType": change.previous_type,
            "newType": change.new_type,
            "mode": self.mode,
            "messageId": raw["messageId"],
            "detectedAt": now,
        }
