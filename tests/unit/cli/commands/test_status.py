"""segflow status: its defaults agree with the components', which it follows; --component."""

from __future__ import annotations

import argparse

import pytest

from cli.commands import status as status_cmd
from ingest.settings import IngestSettings
from observe.settings import StatusSettings
from processors.settings import ProcessorSettings
from runtime.settings import SegflowSettings
from schemas.errors import ConfigError
from sinks.snowflake.settings import SinkSettings


def _defaults(cls: type[SegflowSettings]) -> dict[str, object]:
    return {name: f.default for name, f in cls.model_fields.items()}


def test_the_defaults_are_what_segflow_up_runs() -> None:
    status = _defaults(StatusSettings)
    ingest, process, sink = (
        _defaults(IngestSettings),
        _defaults(ProcessorSettings),
        _defaults(SinkSettings),
    )
    assert status["edge_url"] == f"http://127.0.0.1:{ingest['port']}"
    assert status["processors_url"] == f"http://127.0.0.1:{process['metrics_port']}"
    assert status["sink_url"] == f"http://127.0.0.1:{sink['metrics_port']}"
    assert status["processors_group"] == process["app_id"]
    assert status["sink_group"] == sink["group_id"]
    assert status["control_schema"] == sink["control_schema"]


def test_groups_and_ports_follow_the_components_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGFLOW_SINK_GROUP_ID", "sink-b")
    monkeypatch.setenv("SEGFLOW_PROCESS_APP_ID", "proc-b")
    monkeypatch.setenv("SEGFLOW_INGEST_ADMIN_PORT", "9101")
    monkeypatch.setenv("SEGFLOW_STATUS_SINK_URL", "http://sink.internal:9103")
    parser = argparse.ArgumentParser()
    status_cmd.configure(parser)
    args = parser.parse_args(["--status-processors-group", "proc-c"])
    settings = status_cmd.status_settings(args)
    assert settings.sink_group == "sink-b"  # from the sink's own setting
    assert settings.processors_group == "proc-c"  # given here: wins
    assert settings.edge_url == "http://127.0.0.1:9101"  # the admin port serves health
    assert settings.sink_url == "http://sink.internal:9103"


def test_component_overrides() -> None:
    assert status_cmd.components_from(["edge=http://e:1", " sink = https://s:2 "]) == {
        "edge": "http://e:1",
        "sink": "https://s:2",
    }
    for bad in ("edge", "=http://e:1", "edge=e:1"):
        with pytest.raises(ConfigError):
            status_cmd.components_from([bad])
