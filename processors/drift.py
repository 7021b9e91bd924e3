"""Drift routing against the tracking plan: new properties, type changes, the `_unmapped` column.

Pure logic. Fields checked: a track, page or screen call's top-level ``properties``; an identify
or group call's ``traits``. The plan names, per track event, its properties and their types and,
per call type, the known traits.

- evolve (default): every field stays (unknown ones become warehouse columns).
- strict: a field the plan does not name, or whose type contradicts the plan, moves to the
  event's catch-all ``unmapped`` (``{"properties": {...}}``). Strict applies where the plan has
  something to say: every track event (an event missing from the plan has no known properties)
  and the call types listed under ``traits``; page and screen properties and unlisted trait call
  types are handled as in evolve.

In both modes the first sighting of a field outside the plan (``new_property`` in evolve,
``unplanned_property`` in strict) or of a type that contradicts the planned or first-seen type
(``type_change``) is reported once. An integer where a number is known, and an ISO timestamp
where a string is known, are not type changes.

Known fields are remembered in memory, bounded by ``max_fields`` (oldest forgotten first: a
forgotten field may be reported again), and persisted in a changelog so a restart does not report
them again. Events mostly repeat the same fields with the same types: a field set (names and
types) that was entirely known is remembered too (at most ``_QUIET_MAX`` sets), and an event with
such a set is passed without looking at each field again. The memory is per worker, so a
change is reported at most once per worker (and once more by a worker that takes the partition
over after a rebalance); consumers of segment.schema-changes key changes by (source, callType,
event, field, change, newType).

Names reach drift masked: the pipeline renames a key or event name holding an email, phone or
card number (:mod:`processors.masking`) before calling :meth:`DriftDetector.check`, so the
changes, the changelog keys and ``unmapped`` hold the stand-ins, never the names as sent.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.rules import TrackingPlan

DRIFT_TABLE = "drift"
NEW_PROPERTY = "new_property"
UNPLANNED_PROPERTY = "unplanned_property"
TYPE_CHANGE = "type_change"

_ISO_TS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_SEP = "\x1f"
_QUIET_MAX = 65_536
_NOTHING: dict[str, str] = {}


def infer_type(value: Any) -> str | None:
    """The tracking-plan type of a JSON value; None for null."""
    kind = type(value)
    if kind is str:
        return "timestamp" if len(value) >= 10 and _ISO_TS.match(value) else "string"
    name = _TYPE_NAMES.get(kind, _OTHER)
    if name is not _OTHER:
        return name
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "timestamp" if len(value) >= 10 and _ISO_TS.match(value) else "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string"


# what infer_type answers for the exact types JSON parsing gives (subclasses take the long way)
_OTHER = "other"
_TYPE_NAMES: dict[type, str | None] = {
    type(None): None,
    bool: "boolean",
    int: "integer",
    float: "number",
    dict: "object",
    list: "array",
}


def compatible(known: str, seen: str) -> bool:
    """True when a value of type `seen` fits a field of type `known`."""
    return (
        known == seen
        or (known == "number" and seen == "integer")
        or (known == "string" and seen == "timestamp")
    )


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    change: str
    previous_type: str | None
    new_type: str


@dataclass(slots=True)
class DriftResult:
    unmapped: dict[str, dict[str, Any]]
    changes: list[FieldChange]


class KnownFields:
    """Bounded memory of (source, call type, event, field[, type]) -> first type seen."""

    def __init__(self, max_fields: int) -> None:
        self.max_fields = max_fields
        self._known: OrderedDict[str, str] = OrderedDict()
        self.evictions = 0

    def get(self, key: str) -> str | None:
        return self._known.get(key)

    def put(self, key: str, value: str) -> None:
        self._known[key] = value
        while len(self._known) > self.max_fields:
            self._known.popitem(last=False)
            self.evictions += 1

    def forget(self, keys: list[str]) -> None:
        """Drop `keys` (what a record that then failed remembered: its changelog writes are not
        sent, so the next record with those fields must find them new again)."""
        for key in keys:
            self._known.pop(key, None)

    def load(self, items: list[tuple[bytes, bytes]]) -> None:
        for key, value in items:
            self.put(key.decode(), value.decode())

    def __len__(self) -> int:
        return len(self._known)


class DriftDetector:
    """Checks an event's properties or traits against the plan and the fields seen before."""

    def __init__(self, plan: TrackingPlan, known: KnownFields) -> None:
        self.plan = plan
        self.strict = plan.mode == "strict"
        self.known = known
        # (source/call type/event prefix, ((field, type), ...)) of field sets seen entirely known
        self._quiet: set[tuple[str, tuple[tuple[str, str | None], ...]]] = set()

    def _planned(self, call_type: str, event: str | None) -> tuple[str, Mapping[str, str] | None]:
        """(root, planned field types or None when the plan has nothing to say); read only."""
        if call_type in ("identify", "group"):
            return "traits", self.plan.traits.get(call_type)
        if call_type == "track":
            ev = self.plan.events.get(event or "")
            return "properties", (ev.properties if ev is not None else _NOTHING)
        return "properties", None

    def check(
        self,
        source: str,
        call_type: str,
        event: str | None,
        doc: dict[str, Any],
        new_known: list[tuple[str, str]],
    ) -> DriftResult:
        """Route and report one event's fields; moves strict misfits out of `doc`.

        `new_known` receives the (key, type) pairs remembered for the first time, for the
        changelog.
        """
        root, planned = self._planned(call_type, event)
        fields = doc.get(root)
        result = DriftResult(unmapped={}, changes=[])
        if not isinstance(fields, dict) or not fields:
            return result
        enforce = self.strict and planned is not None
        prefix = source + _SEP + call_type + _SEP + (event or "") + _SEP
        typed = [(name, infer_type(value)) for name, value in fields.items()]
        signature = (prefix, tuple(typed))
        if signature in self._quiet:
            return result
        moved: dict[str, Any] = {}
        remembered = len(new_known)
        for name, seen in typed:
            if seen is None:
                continue
            value = fields[name]
            want = planned.get(name) if planned is not None else None
            misfit = want is None or not compatible(want, seen)
            if enforce and misfit:
                moved[name] = value
            fkey = prefix + name
            pair = fkey + _SEP + seen
            if self.known.get(pair) is not None:
                continue
            self.known.put(pair, seen)
            new_known.append((pair, seen))
            if want is None:
                first = self.known.get(fkey)
                if first is None:
                    self.known.put(fkey, seen)
                    new_known.append((fkey, seen))
                    change = UNPLANNED_PROPERTY if enforce else NEW_PROPERTY
                    result.changes.append(FieldChange(f"{root}.{name}", change, None, seen))
                elif not compatible(first, seen):
                    result.changes.append(FieldChange(f"{root}.{name}", TYPE_CHANGE, first, seen))
            elif not compatible(want, seen):
                result.changes.append(FieldChange(f"{root}.{name}", TYPE_CHANGE, want, seen))
        if moved:
            for name in moved:
                del fields[name]
            result.unmapped[root] = moved
        elif not result.changes and len(new_known) == remembered:
            if len(self._quiet) >= _QUIET_MAX:
                self._quiet.clear()
            self._quiet.add(signature)
        return result
