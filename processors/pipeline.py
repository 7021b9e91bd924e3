"""The per-event function of the processors: a decoded raw record in, an outcome out.

reverse ETL echo -> dedupe -> PII masking -> identity stitching -> drift routing, with no I/O:
the state it reads and changes is in memory and every change is returned as a changelog write,
so the Faust agent only has to decode, call :meth:`Pipeline.process` and send what comes back, in
one transaction. Masking runs before anything is built for a clean topic; drift sees masked
values (the types that reach the warehouse) and reports field names only, never values. Names
are masked before drift too (keys, the event name, page names: :mod:`processors.masking`), so
schema changes, alerts and the drift changelog only ever hold the masked names.

Events of users on the suppression list (:mod:`processors.suppressions`) are dropped first, as
soon as the call type is known: no clean record, identity link, schema change, DLQ copy or state
entry comes from them. Events segflow's own reverse ETL sent (``schemas.markers``) are dropped
next, before dedupe: the warehouse already holds those facts, so they must not come back as new
activity, and they leave no trace in the state.
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
from processors.stitching import LINKING_CALLS, IdentityGraph, StitchResult
from processors.suppressions import SUPPRESSED, SuppressionCheck, is_suppressed_event
from schemas.avro_compiled import micros
from schemas.errors import RecordError
from schemas.markers import reverse_etl_sync
from schemas.topics import CALL_TYPES

DUPLICATE = "duplicate"
REVERSE_ETL_ECHO = "reverse_etl_echo"


@dataclass(slots=True)
class Outcome:
    """What one raw record became. `clean` is None when it was dropped (`dropped` says why:
    ``suppressed``, ``reverse_etl_echo`` or ``duplicate``)."""

    call_type: str
    clean: dict[str, Any] | None
    links: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    refused: str | None = None
    lateness_s: float = 0.0
    dropped: str | None = None

    @property
    def duplicate(self) -> bool:
        return self.dropped == DUPLICATE


def record_key(record: dict[str, Any]) -> str | None:
    """The most anonymous identifier (alias: previousId; else anonymousId; else userId)."""
    if record.get("type") == "alias" and record.get("previousId"):
        return str(record["previousId"])
    return record.get("anonymousId") or record.get("userId")


def _micros(value: datetime | int) -> int:
    return value if type(value) is int else micros(value)


def is_reverse_etl_echo(record: dict[str, Any]) -> bool:
    """True for an event segflow's reverse ETL sent (its context or integrations carry the
    marker of :mod:`schemas.markers`).

    The JSON texts are parsed only when they can hold the marker: its key is in them
    (``segflow``/``Segflow``) or they hold an escape sequence that could spell it.
    """
    context = record.get("context") or ""
    integrations = record.get("integrations") or ""
    if not (
        "egflow" in context or "\\u" in context or "egflow" in integrations or "\\u" in integrations
    ):
        return False
    return reverse_etl_sync(context, integrations) is not None


def _load_map(record: dict[str, Any], name: str) -> dict[str, Any]:
    text = record.get(name) or "{}"
    if text == "{}":
        return {}
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
        suppressions: SuppressionCheck | None = None,
    ) -> None:
        self.deduper = deduper
        self.masker = masker
        self.graph = graph
        self.drift = drift
        self.mode = mode
        self.suppressions = suppressions
        # the batch's clock, as seconds and as timestamp-micros (processedAt): one `now` is
        # passed for a whole batch, so both are worked out once per batch, not per event
        self._now: datetime | None = None
        self._clock = 0.0
        self._now_micros = 0

    def process(
        self,
        raw: dict[str, Any],
        key: bytes | None,
        partition: int,
        now: datetime,
        writes: list[ChangelogWrite],
    ) -> Outcome:
        """Process one decoded raw_event record; raises RecordError for a record it cannot.

        The record itself becomes the clean record (annotated in place, not copied). Its
        timestamps may be datetimes or microseconds since the epoch (``AvroCodec.decode(...,
        micros=True)``); they pass through as they are.
        """
        call_type = raw.get("type")
        if call_type not in CALL_TYPES:
            raise RecordError(f"unknown call type {call_type!r}", code="invalid_record")
        key_text = key.decode("utf-8", "replace") if key is not None else record_key(raw)
        user_id, anonymous_id = raw.get("userId"), raw.get("anonymousId")
        suppressed = self.suppressions.identifiers if self.suppressions is not None else None
        canonical: str | None = None
        if suppressed:
            # resolved before stitching changes the graph: stitching gives an event either its
            # own userId (checked as such) or the userId the graph held for it before
            canonical = self.graph.resolve(key_text, anonymous_id, user_id, partition)
            if is_suppressed_event(
                suppressed, user_id, anonymous_id, raw.get("previousId"), canonical
            ):
                return Outcome(call_type, None, dropped=SUPPRESSED)
        message_id = raw.get("messageId")
        if not message_id:
            raise RecordError("record without messageId", code="invalid_record")
        if now is not self._now:
            self._now, self._clock, self._now_micros = now, now.timestamp(), micros(now)
        clock = self._clock
        received_at: datetime | int = raw["receivedAt"]
        lateness = (_micros(received_at) - _micros(raw["timestamp"])) / 1e6
        if is_reverse_etl_echo(raw):
            return Outcome(call_type, None, lateness_s=lateness, dropped=REVERSE_ETL_ECHO)
        if self.deduper.is_duplicate(partition, message_id, clock):
            return Outcome(call_type, None, lateness_s=lateness, dropped=DUPLICATE)

        doc: dict[str, Any] = {}
        for name in DOCUMENT_ROOTS:
            text = raw.get(name)
            doc[name] = {} if not text or text == "{}" else _load_map(raw, name)
        touched: set[str] = set()  # the roots masking changed
        masked, hashed = self.masker.apply(doc, raw, touched)
        renamed = self.masker.mask_names(raw)  # the event name: table name, drift, alerts
        if renamed:
            masked = renamed + masked

        stitched: StitchResult
        if suppressed and call_type not in LINKING_CALLS:
            stitched = StitchResult(canonical)  # all stitching does for such a call: resolve
        else:
            stitched = self.graph.stitch(
                call_type,
                key_text,
                anonymous_id,
                user_id,
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

        clean = raw  # untouched maps pass through as received
        touched.update(drift.unmapped)
        for name in touched:
            clean[name] = orjson.dumps(doc.get(name, {})).decode()
        clean["canonicalUserId"] = stitched.canonical_user_id
        clean["maskedFields"] = masked
        clean["piiKeyVersion"] = self.masker.key_version if hashed else None
        clean["unmapped"] = orjson.dumps(drift.unmapped).decode() if drift.unmapped else "{}"
        clean["processedAt"] = self._now_micros  # the writer takes micros or a datetime

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
            ]
            if stitched.links
            else [],
            changes=[self._change(raw, c, now) for c in drift.changes] if drift.changes else [],
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
