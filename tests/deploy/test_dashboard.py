"""The Grafana dashboard queries only metrics the components export, and covers what an
operator watches: ingest rate and errors, lag per partition, flushes, rows loaded, DLQ, schema
changes, identity merges."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.deploy.conftest import DASHBOARD

PACKAGES = ("ingest", "processors", "sinks", "runtime")

# Series names Prometheus derives from a metric family, by type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

# PromQL words that are not metric names.
_PROMQL_WORDS = {
    # aggregations and keywords
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    # functions
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "histogram_count",
    "histogram_sum",
    "histogram_avg",
    "histogram_fraction",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "ln",
    "log2",
    "log10",
    "minute",
    "month",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "year",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "present_over_time",
    "label_values",
    "query_result",
}


def exported_series() -> set[str]:
    """Series names of every metrics bundle: each `*Metrics` class of our packages that takes a
    `registry`, instantiated on a fresh CollectorRegistry."""
    modules = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        modules.append(root)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            leaf = info.name.rsplit(".", 1)[-1]
            if leaf == "metrics" or info.ispkg:
                modules.append(importlib.import_module(info.name))
    bundles: set[type[Any]] = {
        value
        for module in modules
        for value in vars(module).values()
        if inspect.isclass(value)
        and value.__name__.endswith("Metrics")
        and "registry" in inspect.signature(value.__init__).parameters
    }
    names: set[str] = set()
    for bundle in bundles:
        registry = CollectorRegistry()
        bundle(registry=registry)
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets (rows nested too) and templating queries."""
    found: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text
    )  # label lists
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    words = re.findall(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", text)
    return {w for w in words if w not in _PROMQL_WORDS and not re.fullmatch(r"\d.*|e\d+", w)}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (le, call_type) (rate(segflow_a_bucket{outcome!="x", q=~"a|b"}[$__rate_interval]))'
        " / on (job) group_left sum(segflow_b_total offset 5m) > bool 0.5"
    )
    assert metric_names(expr) == {"segflow_a_bucket", "segflow_b_total"}


def test_dashboard_queries_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_series()
    assert any(n.startswith("segflow_ingest_") for n in exported)
    assert any(n.startswith("segflow_process_") for n in exported)
    assert any(n.startswith("segflow_sink_") for n in exported)
    exprs = queries(dashboard)
    assert exprs
    missing = sorted(
        {f"{name} (in {expr})" for expr in exprs for name in metric_names(expr) - exported}
    )
    assert not missing, "the dashboard queries metrics no component exports:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    "topic, metric",
    [
        ("ingest rate", "segflow_ingest_events_total"),
        ("ingest errors", "segflow_ingest_requests_total"),
        ("lag per partition", "segflow_sink_consumer_lag_records"),
        ("flush size", "segflow_sink_flush_size_records_bucket"),
        ("flush duration", "segflow_sink_flush_duration_seconds_bucket"),
        ("rows loaded", "segflow_sink_rows_loaded_total"),
        ("DLQ rate", "segflow_process_dlq_total"),
        ("schema changes", "segflow_process_schema_changes_total"),
        ("identity merges", "segflow_process_identity_links_total"),
    ],
)
def test_dashboard_covers(dashboard: dict[str, Any], topic: str, metric: str) -> None:
    assert any(metric in metric_names(expr) for expr in queries(dashboard)), topic


def test_dashboard_is_importable(dashboard: dict[str, Any]) -> None:
    """Unique panel ids, a Prometheus data source variable, no hard-wired data source."""
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    (source,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${" + source["name"] + "}", panel["title"]
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
