"""The pipeline view: sums read from the components' real metrics, rates, restarts, outages
and the status tables with freshness p50/p95."""

from __future__ import annotations

import urllib.error

from prometheus_client import CollectorRegistry, generate_latest

from ingest.metrics import IngestMetrics
from observe.console.pipeline import (
    COUNTERS,
    GAUGES,
    Reading,
    Scraper,
    percentiles,
    stage_rates,
    status_view,
    totals,
)
from processors.metrics import ProcessorMetrics
from sinks.snowflake.metrics import SinkMetrics


def test_every_counted_metric_is_one_the_components_register() -> None:
    registry = CollectorRegistry()
    IngestMetrics(registry)
    ProcessorMetrics(registry)
    SinkMetrics(registry)
    names = {family.name for family in registry.collect()}
    assert {name for name, _ in COUNTERS.values()} <= names
    assert set(GAUGES.values()) <= names


def edge_text(accepted: int, invalid: int = 0) -> str:
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    metrics.events.labels("track", "accepted").inc(accepted)
    metrics.events.labels("page", "accepted").inc(accepted)
    metrics.events.labels("track", "invalid").inc(invalid)
    return generate_latest(registry).decode()


def test_totals_sum_the_labels_the_view_asks_for() -> None:
    registry = CollectorRegistry()
    sink = SinkMetrics(registry)
    sink.records.labels("t", "buffered").inc(7)
    sink.records.labels("t", "dlq").inc(2)
    sink.rows_loaded.labels("tracks").inc(5)
    sink.lag.labels("t", "0").set(10)
    sink.lag.labels("t", "1").set(5)
    got = totals(generate_latest(registry).decode())
    assert got["sink.in"] == 9 and got["sink.errors"] == 2 and got["sink.out"] == 5
    assert got["sink.lag"] == 15
    edge = totals(edge_text(10, invalid=3))
    assert edge["edge.in"] == 20 and edge["edge.errors"] == 3


def test_rates_between_two_readings_and_none_across_a_restart() -> None:
    first = Reading(100.0, {"edge.in": 100.0})
    second = Reading(102.0, {"edge.in": 300.0})
    assert stage_rates(None, second) == {}
    assert stage_rates(first, second) == {"edge.in": 100.0}
    assert stage_rates(second, Reading(104.0, {"edge.in": 3.0})) == {}


def test_the_scraper_counts_restarts_and_outages() -> None:
    answers: list[str | Exception] = [
        edge_text(10),
        edge_text(20),
        urllib.error.URLError("refused"),
        edge_text(1),  # started over: counters went down
        edge_text(6),
    ]
    clock = iter([0.0, 2.0, 4.0, 6.0, 8.0])

    def fetch(url: str, timeout_s: float) -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    scraper = Scraper({"edge": "http://edge/metrics"}, fetch=fetch, clock=lambda: next(clock))
    views = []
    for _ in range(5):
        scraper.scrape()
        views.append(scraper.view()[0])
    assert views[0]["in_per_s"] is None and views[0]["up"]
    assert views[1]["in_per_s"] == 10.0  # (40 - 20) events over 2 s
    assert not views[2]["up"] and views[2]["outages"] == 1 and views[2]["error"] == "URLError"
    assert views[3]["up"] and views[3]["restarts"] == 1 and views[3]["in_per_s"] is None
    assert views[4]["in_per_s"] == 5.0 and views[4]["restarts"] == 1


def test_status_tables_and_freshness_percentiles() -> None:
    status = {
        "healthy": False,
        "problems": ["sink is down"],
        "unchecked": ["warehouse: timed out"],
        "components": [{"name": "sink", "url": "u", "state": "down", "detail": "refused"}],
        "groups": [{"group": "g", "state": "stable", "members": 1, "lag": 12, "topics": []}],
        "dlq": {"topic": "segment.dlq", "depth": 3, "partitions": {}, "newest": []},
        "tables": [
            {"schema": "web", "table": f"t{i}", "last_load": None, "freshness_s": float(i)}
            for i in range(1, 21)
        ]
        + [{"schema": "web", "table": "empty", "last_load": None, "freshness_s": None}],
    }
    view = status_view(status)
    assert view["freshness"] == {"p50_s": 10.0, "p95_s": 19.0, "tables": 20}
    tables = view["tables"]
    assert tables["Problems"] == [
        {"problem": "sink is down"},
        {"problem": "not checked: warehouse: timed out"},
    ]
    assert tables["Consumer lag"] == [{"group": "g", "state": "stable", "members": 1, "lag": 12}]
    assert tables["DLQ depth"] == [{"topic": "segment.dlq", "depth": 3}]
    assert len(tables["Freshness per table"]) == 21
    assert status_view({})["freshness"]["p50_s"] is None
    assert percentiles([5.0]) == [5.0, 5.0]
