"""segflow up's pure parts: where each component answers, how loud the children are, and the
closing block a person reads."""

from __future__ import annotations

import pytest

from cli.commands.up import Endpoints, child_log_level, closing_block, endpoints
from ingest.settings import IngestSettings
from processors.settings import ProcessorSettings
from runtime.rules import load_rules
from runtime.settings import ObservabilitySettings, build_settings
from sinks.snowflake.settings import SinkSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SEGFLOW_LOG_LEVEL",
        "SEGFLOW_INGEST_PORT",
        "SEGFLOW_INGEST_ADMIN_PORT",
        "SEGFLOW_PROCESS_METRICS_PORT",
        "SEGFLOW_SINK_METRICS_PORT",
    ):
        monkeypatch.delenv(name, raising=False)


def test_endpoints_follow_the_components_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGFLOW_INGEST_ADMIN_PORT", "9101")
    monkeypatch.setenv("SEGFLOW_SINK_METRICS_PORT", "0")  # any port: no URL to poll
    urls = endpoints(
        build_settings(IngestSettings, port=18088),
        build_settings(ProcessorSettings),
        build_settings(SinkSettings),
        ("127.0.0.1", 8095),
    )
    assert urls.edge == "http://127.0.0.1:18088"
    assert urls.health == {
        "ingest": "http://127.0.0.1:9101/readyz",
        "process": "http://127.0.0.1:9102/readyz",
    }
    assert urls.metrics["process"] == "http://127.0.0.1:9102/metrics"
    assert urls.console == "http://127.0.0.1:8095"


def test_without_an_admin_port_the_edge_answers_health_itself() -> None:
    urls = endpoints(
        build_settings(IngestSettings),
        build_settings(ProcessorSettings),
        build_settings(SinkSettings),
        None,
    )
    assert urls.health["ingest"] == "http://127.0.0.1:8088/readyz"
    assert urls.console is None


def test_children_are_quiet_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert child_log_level(build_settings(ObservabilitySettings), verbose=False) == "WARNING"
    assert child_log_level(build_settings(ObservabilitySettings), verbose=True) == "INFO"
    monkeypatch.setenv("SEGFLOW_LOG_LEVEL", "DEBUG")
    assert child_log_level(build_settings(ObservabilitySettings), verbose=False) == "DEBUG"
    explicit = build_settings(ObservabilitySettings, log_level="INFO")
    assert child_log_level(explicit, verbose=False) == "INFO"


def test_closing_block_names_everything_a_person_needs() -> None:
    urls = Endpoints(
        edge="http://127.0.0.1:8088",
        health={"ingest": "http://127.0.0.1:9101/readyz", "sink": "http://127.0.0.1:9103/readyz"},
        metrics={
            "ingest": "http://127.0.0.1:9101/metrics",
            "sink": "http://127.0.0.1:9103/metrics",
        },
        console="http://127.0.0.1:8095",
    )
    rules = load_rules(None)
    block = closing_block(urls, rules, dev_keys=True, level="WARNING")
    for needle in (
        "http://127.0.0.1:8088/v1/track",
        rules.sources[0].write_keys[0],
        "http://127.0.0.1:9101/readyz",
        "http://127.0.0.1:9103/metrics",
        "console:    http://127.0.0.1:8095",
        "--verbose",
        "Ctrl-C",
    ):
        assert needle in block
    assert len(block.splitlines()) < 20
    own_rules = closing_block(urls, rules, dev_keys=False, level="INFO")
    assert rules.sources[0].write_keys[0] not in own_rules
