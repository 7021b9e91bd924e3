"""The pipeline view: rates per stage from the components' ``/metrics``, scraped server-side.

`totals` reads the Prometheus text of one component into the few sums the view needs (pure);
`stage_rates` turns two such readings into per-second rates; `Scraper` keeps the last two
readings of each component, counts restarts (a counter that went down: the process started
over) and outages, and is what the console's background task calls every few seconds.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# (stage, what it counts) -> (metric family, label filter); a filter value of None: any.
COUNTERS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "edge.in": ("segflow_ingest_events", {"outcome": ("accepted",)}),
    "edge.errors": (
        "segflow_ingest_events",
        {"outcome": ("invalid", "unavailable", "rate_limited", "unauthorized")},
    ),
    "processors.in": ("segflow_process_events", {}),
    "processors.out": ("segflow_process_events", {"outcome": ("clean",)}),
    "processors.errors": ("segflow_process_dlq", {}),
    "sink.in": ("segflow_sink_records", {}),
    "sink.out": ("segflow_sink_rows_loaded", {}),
    "sink.errors": ("segflow_sink_records", {"outcome": ("dlq",)}),
    "sink.retries": ("segflow_sink_retries", {}),
    "sink.rollbacks": ("segflow_sink_rollbacks", {}),
}
GAUGES: dict[str, str] = {
    "sink.lag": "segflow_sink_consumer_lag_records",
    "edge.queue": "segflow_ingest_producer_queue_messages",
}
STAGES = ("edge", "processors", "sink")


def totals(text: str) -> dict[str, float]:
    """The `COUNTERS` and `GAUGES` sums found in one component's Prometheus text."""
    out: dict[str, float] = {}
    wanted_gauges = {name: key for key, name in GAUGES.items()}
    for family in text_string_to_metric_families(text):
        for key, (name, labels) in COUNTERS.items():
            if family.name != name:
                continue
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                if all(sample.labels.get(k) in v for k, v in labels.items()):
                    out[key] = out.get(key, 0.0) + float(sample.value)
        gauge_key = wanted_gauges.get(family.name)
        if gauge_key is not None:
            out[gauge_key] = sum(float(s.value) for s in family.samples)
    return out


@dataclass(frozen=True)
class Reading:
    at: float
    values: Mapping[str, float]


def stage_rates(prev: Reading | None, cur: Reading) -> dict[str, float]:
    """Per-second rates of the counters between two readings (none before a second reading,
    and none across a restart, where a counter went down)."""
    if prev is None or cur.at <= prev.at:
        return {}
    span = cur.at - prev.at
    out: dict[str, float] = {}
    for key in COUNTERS:
        if key in cur.values:
            delta = cur.values[key] - prev.values.get(key, 0.0)
            if delta >= 0:
                out[key] = delta / span
    return out


def restarted(prev: Reading | None, cur: Reading) -> bool:
    """A counter that went down: the component's process started over between the readings."""
    if prev is None:
        return False
    return any(cur.values.get(k, v) < v for k, v in prev.values.items() if k in COUNTERS)


@dataclass
class ComponentState:
    name: str
    url: str
    up: bool = False
    restarts: int = 0
    outages: int = 0
    error: str = ""
    prev: Reading | None = None
    cur: Reading | None = None
    rates: dict[str, float] = field(default_factory=dict)

    def observe(self, reading: Reading | None, error: str = "") -> None:
        if reading is None:
            if self.up:
                self.outages += 1
            self.up, self.error = False, error
            return
        if self.cur is not None and restarted(self.cur, reading):
            self.restarts += 1
            self.prev = None
        else:
            self.prev = self.cur
        self.cur, self.up, self.error = reading, True, ""
        self.rates = stage_rates(self.prev, self.cur)


def fetch_metrics(url: str, timeout_s: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return str(response.read(4_000_000).decode("utf-8", "replace"))


class Scraper:
    """Scrapes each component's /metrics and keeps what the pipeline view shows."""

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        timeout_s: float = 3.0,
        fetch: Callable[[str, float], str] = fetch_metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.components = {name: ComponentState(name, url) for name, url in urls.items()}
        self._timeout_s = timeout_s
        self._fetch = fetch
        self._clock = clock

    def scrape(self) -> None:
        for state in self.components.values():
            try:
                text = self._fetch(state.url, self._timeout_s)
                state.observe(Reading(self._clock(), totals(text)))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                state.observe(None, type(exc).__name__)

    def view(self) -> list[dict[str, Any]]:
        """One row per stage: rates in, out and of errors (per second), lag, restarts."""
        rows = []
        for name, state in self.components.items():
            values = state.cur.values if state.cur is not None else {}
            rows.append(
                {
                    "stage": name,
                    "up": state.up,
                    "error": state.error,
                    "in_per_s": state.rates.get(f"{name}.in"),
                    "out_per_s": state.rates.get(f"{name}.out", state.rates.get(f"{name}.in")),
                    "errors_per_s": state.rates.get(f"{name}.errors"),
                    "errors_total": values.get(f"{name}.errors"),
                    "lag": values.get(f"{name}.lag"),
                    "restarts": state.restarts,
                    "outages": state.outages,
                }
            )
        return rows


def percentiles(values: Iterable[float], qs: Iterable[float] = (0.5, 0.95)) -> list[float | None]:
    """Nearest-rank percentiles of `values` (None for an empty list)."""
    ordered = sorted(values)
    if not ordered:
        return [None for _ in qs]
    return [ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))] for q in qs]


def status_view(status: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of `observe.status.PipelineStatus.to_dict()` the pipeline view shows, as tables,
    and the freshness p50/p95 over the loaded tables (seconds since each table's newest event)."""
    tables = status.get("tables") or []
    fresh = [float(t["freshness_s"]) for t in tables if t.get("freshness_s") is not None]
    p50, p95 = percentiles(fresh)
    dlq = status.get("dlq") or {}
    return {
        "healthy": status.get("healthy"),
        "freshness": {"p50_s": p50, "p95_s": p95, "tables": len(fresh)},
        "tables": {
            "Problems": [{"problem": p} for p in status.get("problems", [])]
            + [{"problem": f"not checked: {u}"} for u in status.get("unchecked", [])],
            "Components": [
                {k: c.get(k) for k in ("name", "state", "detail")}
                for c in status.get("components", [])
            ],
            "Consumer lag": [
                {k: g.get(k) for k in ("group", "state", "members", "lag")}
                for g in status.get("groups", [])
            ],
            "DLQ depth": [{"topic": dlq.get("topic"), "depth": dlq.get("depth")}] if dlq else [],
            "Freshness per table": [
                {
                    "table": f"{t.get('schema')}.{t.get('table')}",
                    "last_load": t.get("last_load"),
                    "freshness_s": t.get("freshness_s"),
                }
                for t in tables
            ],
        },
    }
