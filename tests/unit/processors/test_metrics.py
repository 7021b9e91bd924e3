"""The processors' metrics: the batch histogram exposes what prometheus_client's would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from processors.metrics import LATENESS_BUCKETS, BatchHistogram, ProcessorMetrics


def test_a_batch_histogram_exposes_what_a_histogram_observing_each_value_would() -> None:
    rnd = random.Random(5)
    values = [
        rnd.choice((-2.0, 0.0, 0.1, 1.0, 30.0, 86_400.0, 1e9)) * rnd.random() for _ in range(500)
    ]
    values += [float(b) for b in LATENESS_BUCKETS] + [0.1000001, 3e6]  # on and past each bound
    plain, batched = CollectorRegistry(), CollectorRegistry()
    reference = Histogram(
        "h_seconds", "doc", ["call_type"], buckets=LATENESS_BUCKETS, registry=plain
    )
    ours = BatchHistogram("h_seconds", "doc", ["call_type"], LATENESS_BUCKETS, batched)
    for value in values:
        reference.labels("track").observe(value)
    reference.labels("page")  # a series named but never observed
    ours.observe_all(("track",), values[:100])
    ours.observe_all(("track",), values[100:])
    ours.observe_all(("page",), [])

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [ln for ln in text.splitlines() if "_created" not in ln]

    assert lines(batched) == lines(plain)


def test_the_lateness_histogram_counts_each_event() -> None:
    registry = CollectorRegistry()
    metrics = ProcessorMetrics(registry)
    metrics.lateness.observe_all(("track",), [0.05, 2.0, 2.0])
    name = "segflow_process_event_lateness_seconds"
    assert registry.get_sample_value(f"{name}_count", {"call_type": "track"}) == 3
    assert registry.get_sample_value(f"{name}_bucket", {"call_type": "track", "le": "5.0"}) == 3
    assert registry.get_sample_value(f"{name}_bucket", {"call_type": "track", "le": "0.1"}) == 1
    assert registry.get_sample_value(f"{name}_sum", {"call_type": "track"}) == 4.05
