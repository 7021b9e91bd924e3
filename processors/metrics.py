"""The processors' Prometheus metrics, built on an injected registry."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENESS_BUCKETS = (0.1, 1, 5, 30, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400)


class BatchHistogram(Collector):
    """A labelled histogram filled a batch of observations at a time.

    prometheus_client's ``Histogram.observe`` takes two locks per observation (the bucket's and
    the sum's), about a microsecond, paid once per event; this one takes one lock per batch and
    series. Exposed as prometheus_client exposes a histogram (``_bucket`` with ``le``,
    ``_count``, ``_sum``); a series appears once it was named in :meth:`observe_all`.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = sorted(float(b) for b in buckets)
        self._les = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        # label values -> (per-bucket counts, not cumulative; [sum])
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe_all(self, labelvalues: tuple[str, ...], values: Iterable[float]) -> None:
        """Observe each of `values` in the series of `labelvalues` (one value per label)."""
        if len(labelvalues) != len(self._labelnames):
            raise ValueError(f"{self._name}: expected labels {self._labelnames}")
        bounds = self._bounds
        with self._lock:
            series = self._series.get(labelvalues)
            if series is None:
                series = self._series[labelvalues] = ([0] * len(self._les), [0.0])
            counts, total = series[0], series[1][0]
            for value in values:
                counts[bisect_left(bounds, value)] += 1  # the first bucket with value <= le
                total += value  # one at a time, as prometheus_client adds them
            series[1][0] = total

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            snapshot = [(lv, list(c), s[0]) for lv, (c, s) in self._series.items()]
        for labelvalues, counts, total in snapshot:
            cumulative, buckets = 0, []
            for le, n in zip(self._les, counts, strict=True):
                cumulative += n
                buckets.append((le, float(cumulative)))
            family.add_metric(list(labelvalues), buckets, total)
        yield family


class ProcessorMetrics:
    """segflow_process_* metrics. Labels are low-cardinality: call type, outcome, action, table."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "segflow_process_events_total",
            "Raw records processed, by call type and outcome (clean, duplicate, "
            "reverse_etl_echo: segflow's own reverse ETL calls coming back, dropped; "
            "suppressed: a user on the suppression list, dropped; dlq)",
            ["call_type", "outcome"],
            registry=registry,
        )
        self.duplicates = Counter(
            "segflow_process_duplicates_total",
            "Events dropped because their messageId was seen within the lookback",
            ["call_type"],
            registry=registry,
        )
        self.dlq = Counter(
            "segflow_process_dlq_total",
            "Records sent to the DLQ, by error code",
            ["code"],
            registry=registry,
        )
        self.masked_fields = Counter(
            "segflow_process_masked_fields_total",
            "Fields changed by the PII rules or the detector, by action",
            ["action"],
            registry=registry,
        )
        self.identity_links = Counter(
            "segflow_process_identity_links_total",
            "Identity links written to segment.identity, by identifier type",
            ["identifier_type"],
            registry=registry,
        )
        self.identity_refused = Counter(
            "segflow_process_identity_merges_refused_total",
            "Identity merges refused by a guard rail (shared_device, blocked)",
            ["reason"],
            registry=registry,
        )
        self.schema_changes = Counter(
            "segflow_process_schema_changes_total",
            "First sightings of new properties or type changes, by kind of change",
            ["change"],
            registry=registry,
        )
        self.alerts = Counter(
            "segflow_process_alerts_total",
            "Schema-change webhook posts, by outcome (sent, failed, suppressed)",
            ["outcome"],
            registry=registry,
        )
        self.lateness = BatchHistogram(
            "segflow_process_event_lateness_seconds",
            "receivedAt - timestamp of processed events",
            ["call_type"],
            LATENESS_BUCKETS,
            registry,
        )
        self.stale_records = Counter(
            "segflow_process_stale_records_total",
            "Fetched records left unacknowledged because a rebalance made them stale, before "
            "or after processing (output discarded); read again from the committed offsets by "
            "the partition's owner",
            registry=registry,
        )
        self.commit_stalls = Counter(
            "segflow_process_commit_stalls_total",
            "Partitions read again from their committed offset because their commits were stuck "
            "behind records read but never acknowledged",
            ["topic"],
            registry=registry,
        )
        self.skipped_fetches = Counter(
            "segflow_process_skipped_fetches_total",
            "Fetches that started past the next offset of their partition where reading again "
            "from that offset found records (fetched and dropped, or lost, with no seek back): "
            "read in order before what followed them",
            ["topic"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "segflow_process_batch_seconds",
            "Seconds to process and hand over one batch",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.batch_events = Histogram(
            "segflow_process_batch_events",
            "Records in one processed batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.state_entries = Gauge(
            "segflow_process_state_entries",
            "Entries held in memory per state table",
            ["table"],
            registry=registry,
        )
        self.state_bytes = Gauge(
            "segflow_process_state_bytes",
            "Bytes of keys and values held in memory per state table (bounded per partition)",
            ["table"],
            registry=registry,
        )
        self.state_drops = Counter(
            "segflow_process_state_partitions_dropped_total",
            "Partitions whose in-memory state was dropped, to be read back from the changelogs, "
            "by reason (revoked: the partition left; lost: this worker was out of the group)",
            ["reason"],
            registry=registry,
        )
        self.state_evictions = Gauge(
            "segflow_process_state_evictions",
            "Entries evicted from a state table since start, by reason (max_entries, max_bytes, "
            "expired)",
            ["table", "reason"],
            registry=registry,
        )
        self.recovered_entries = Counter(
            "segflow_process_recovered_entries_total",
            "State entries read back from the changelogs after an assignment",
            ["table"],
            registry=registry,
        )
