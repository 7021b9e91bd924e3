"""The chart's PrometheusRule and `helm test` hook: every alert's PromQL parses (a port of
Prometheus's own parser; promtool itself is a build of all of Prometheus) and reads only metrics
the components register, each alert carries a severity, a summary and a runbook; the test pod
asks every component's /readyz through its metrics Service."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import promql_parser
import pytest
import yaml

from tests.deploy.conftest import VALUES_FILES, run_helm, template_args
from tests.deploy.test_dashboard import exported_series

Manifests = Callable[[str], list[dict[str, Any]]]

# The processors export no lag: their alert reads kafka-exporter's, when enabled.
EXTERNAL_METRICS = {"kafka_consumergroup_lag"}
ALERTS = {
    "SegflowSinkLagHigh",
    "SegflowProcessorsLagHigh",
    "SegflowDeadLettersRising",
    "SegflowProcessorCommitsStuck",
    "SegflowWarehouseStale",
    "SegflowSinkFlushesFailing",
    "SegflowEdgeUnavailable",
}


def _rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def selected_metrics(expr: str) -> set[str]:
    """The metric names an expression reads; a ValueError when it is not valid PromQL."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return names


def test_the_parser_refuses_what_prometheus_refuses() -> None:
    assert selected_metrics('sum by (t) (rate(a_total{x="1"}[5m])) / on() b > 0') == {
        "a_total",
        "b",
    }
    for broken in ("sum by (t (rate(a[5m]))", "rat(a[5m])", "rate(a[5x])", "a >"):
        with pytest.raises(ValueError):
            selected_metrics(broken)


def test_every_alert_parses_reads_registered_metrics_and_has_a_runbook(
    manifests: Manifests,
) -> None:
    rules = _rules(manifests("production"))
    assert {r["alert"] for r in rules} == ALERTS
    known = exported_series() | EXTERNAL_METRICS
    for rule in rules:
        name = rule["alert"]
        metrics = selected_metrics(rule["expr"])
        assert metrics and metrics <= known, f"{name} reads unknown metrics {metrics - known}"
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        promql_parser.parse_duration(rule["for"])
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"] and len(notes["runbook"]) > 40, name
        assert notes["runbook_url"] == f"https://runbooks.example.com/segflow#{name.lower()}"
        # templated annotations are Go templates over $labels/$value, not left-over helm syntax
        assert "{{ $" in notes["summary"] or "{{" not in notes["summary"], name


def test_alert_thresholds_come_from_values(tools: Any) -> None:
    proc = run_helm(
        tools,
        *template_args(
            VALUES_FILES["development"],
            "1.27.0",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.sinkLagRecords=5",
            "--set",
            "prometheusRule.freshnessWindow=42m",
            "--show-only",
            "templates/prometheusrule.yaml",
        ),
    )
    assert proc.returncode == 0, proc.stderr
    rules = {r["alert"]: r for r in _rules([yaml.safe_load(proc.stdout)])}
    assert rules["SegflowSinkLagHigh"]["expr"].endswith("> 5")
    assert "[42m]" in rules["SegflowWarehouseStale"]["expr"]
    assert "SegflowProcessorsLagHigh" not in rules  # kafka-exporter's lag: opt-in
    assert "runbook_url" not in rules["SegflowSinkLagHigh"]["annotations"]


def test_default_values_render_no_rule_and_a_test_pod(manifests: Manifests) -> None:
    objects = manifests("development")
    assert not [o for o in objects if o["kind"] == "PrometheusRule"]
    (pod,) = [o for o in objects if o["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    services = {
        o["metadata"]["name"]: o["spec"]["ports"][0]["port"]
        for o in objects
        if o["kind"] == "Service" and o["metadata"]["labels"].get("segflow.io/metrics") == "true"
    }
    urls = pod["spec"]["containers"][0]["args"][1:]
    assert urls == sorted(urls, key=lambda u: ["ingest", "process", "sink"].index(_comp(u)))
    assert {u.split("//")[1].split("/")[0] for u in urls} == {
        f"{name}:{port}" for name, port in services.items()
    }
    assert all(u.endswith("/readyz") for u in urls) and len(urls) == 3


def _comp(url: str) -> str:
    host = url.split("//")[1].split(":")[0]
    return next(
        c for c in ("ingest", "process", "sink") if host.endswith(("-" + c, c + "-metrics"))
    )


def test_the_test_pods_script_passes_only_when_every_url_is_ready(tools: Any) -> None:
    proc = run_helm(
        tools,
        *template_args(
            VALUES_FILES["development"],
            "1.27.0",
            "--set",
            "helmTest.timeoutSeconds=1",
            "--show-only",
            "templates/tests/readyz.yaml",
        ),
    )
    assert proc.returncode == 0, proc.stderr
    (container,) = yaml.safe_load(proc.stdout)["spec"]["containers"]
    assert container["command"] == ["python", "-c"]
    script = container["args"][0]

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        ok = subprocess.run([sys.executable, "-c", script, f"{base}/readyz"], timeout=30)
        bad = subprocess.run(
            [sys.executable, "-c", script, f"{base}/readyz", f"{base}/not-ready"], timeout=30
        )
    finally:
        server.shutdown()
    assert (ok.returncode, bad.returncode) == (0, 1)
