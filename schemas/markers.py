"""Markers segflow puts on the events it sends itself, so the pipeline can recognise its echo.

Reverse ETL (reverse_etl) sends warehouse rows as identify/track calls to a
Segment-compatible API, which may be our own edge or Segment relaying to us. Every such call
carries

- ``context.segflow.reverse_etl = "<sync name>"`` (the marker that counts), and
- ``integrations.Segflow = false`` (Segment's own way to say "not to this destination"),

and the processors and the sink use :func:`reverse_etl_sync` to keep the echo out of the event
tables: the warehouse already holds those facts, so they are not new user activity.
"""

from __future__ import annotations

from typing import Any

import orjson

CONTEXT_KEY = "segflow"
REVERSE_ETL_FIELD = "reverse_etl"
INTEGRATION_NAME = "Segflow"


def reverse_etl_context(sync_name: str) -> dict[str, Any]:
    """The ``context.segflow`` object of a reverse ETL call."""
    return {REVERSE_ETL_FIELD: sync_name}


def _as_object(value: object) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str | bytes) and value:
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def reverse_etl_sync(context: object, integrations: object = None) -> str | None:
    """The sync name when an event is segflow's own reverse ETL echo, else None.

    Accepts the objects or their JSON text (as raw and clean records carry them).
    """
    ctx = _as_object(context)
    if ctx is not None:
        ours = ctx.get(CONTEXT_KEY)
        if isinstance(ours, dict):
            name = ours.get(REVERSE_ETL_FIELD)
            if isinstance(name, str) and name:
                return name
    integ = _as_object(integrations)
    if integ is not None and integ.get(INTEGRATION_NAME) is False:
        return "unknown"
    return None
