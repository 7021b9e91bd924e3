"""The edge's Prometheus metrics, built on an injected registry.

- ``segflow_ingest_requests_total{endpoint, outcome}``: HTTP requests; outcome is accepted,
  invalid, unauthorized, rate_limited, unavailable (503), error (any other 5xx) or not_found.
- ``segflow_ingest_events_total{call_type, outcome}``: events; outcome is accepted, invalid,
  suppressed, rate_limited, unavailable or unauthorized.
- ``segflow_ingest_request_duration_seconds{endpoint}``: request latency, body read to answer.
- ``segflow_ingest_delivery_duration_seconds``: first produce to last Kafka acknowledgement.
- ``segflow_ingest_producer_queue_messages``: events handed to the producer, not yet acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.topics import CALL_TYPES

ENDPOINTS = (*CALL_TYPES, "batch", "webhook", "settings", "other")
EVENT_OUTCOMES = (
    "accepted",
    "invalid",
    "suppressed",
    "rate_limited",
    "unavailable",
    "unauthorized",
)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def outcome_of(status: int) -> str:
    """The request outcome label of an HTTP status."""
    if status < 300:
        return "accepted"
    if status in (401, 403):
        return "unauthorized"
    if status == 429:
        return "rate_limited"
    if status == 503:
        return "unavailable"
    if status >= 500:
        return "error"
    if status in (404, 405):
        return "not_found"
    return "invalid"


class IngestMetrics:
    """All metrics of the edge; label children are bound once, so the hot path only adds."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "segflow_ingest_requests_total",
            "HTTP requests by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.events = Counter(
            "segflow_ingest_events_total",
            "Events by call type and outcome",
            ["call_type", "outcome"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "segflow_ingest_request_duration_seconds",
            "Seconds from the start of a request to its answer",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "segflow_ingest_delivery_duration_seconds",
            "Seconds from the first produce of a request to Kafka acknowledging all its events",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_messages = Gauge(
            "segflow_ingest_producer_queue_messages",
            "Events in the producer queue, not yet acknowledged by Kafka",
            registry=registry,
        )
        self._events = {
            (ct, outcome): self.events.labels(ct, outcome)
            for ct in (*CALL_TYPES, "unknown")
            for outcome in EVENT_OUTCOMES
        }
        self._latency = {e: self.request_seconds.labels(e) for e in ENDPOINTS}

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Report the producer's queue depth at scrape time."""
        self.queue_messages.set_function(lambda: float(depth()))

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, outcome_of(status)).inc()
        self._latency[endpoint].observe(seconds)

    def count_events(self, counts: dict[str, int], outcome: str) -> None:
        """Add per-call-type counts under one outcome."""
        for call_type, n in counts.items():
            if n:
                self._events[(call_type, outcome)].inc(n)

    def count_items(self, items: Iterable[object], outcome: str, call_type: str | None) -> None:
        """Count refused items by the type they claim (unknown when they claim none)."""
        counts: dict[str, int] = {}
        for item in items:
            ct = call_type
            if ct is None:
                claimed = item.get("type") if isinstance(item, dict) else None
                ct = claimed if claimed in CALL_TYPES else "unknown"
            counts[ct] = counts.get(ct, 0) + 1
        self.count_events(counts, outcome)
