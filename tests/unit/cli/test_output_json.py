"""`--output json`: one JSON document on stdout (the human lines on stderr), the same facts as
the table; checked on query, services status and replay reset against spec'd fakes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cli.main import main
from runtime.replay import PartitionReset, ResetTarget
from runtime.services.process import ServiceStatus


class FakeCursor:
    description = [("EVENT",), ("N",)]
    rowcount = 2

    def execute(self, sql: str) -> None:
        self.sql = sql

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        return [("Signed Up", 3), ("Order Completed", None)][:size]


class FakeConnection:
    def cursor(self) -> FakeCursor:
        return FakeCursor()

    def close(self) -> None:
        pass


def test_query_prints_rows_as_objects(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import snowflake.connector

    monkeypatch.setattr(snowflake.connector, "connect", lambda **_: FakeConnection())
    assert main(["query", "select event, n from t", "--output", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == {
        "columns": ["EVENT", "N"],
        "rows": [{"EVENT": "Signed Up", "N": 3}, {"EVENT": "Order Completed", "N": None}],
        "more": False,
    }
    assert main(["query", "select event, n from t", "--max-rows", "1"]) == 0
    table = capsys.readouterr().out
    assert "Signed Up" in table and "(1 rows (more not shown))" in table


def _status(name: str, ready: bool) -> ServiceStatus:
    return ServiceStatus(name, ready, 42 if ready else None, "127.0.0.1:1", ready, ready)


def test_services_status_as_json_and_its_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.commands import services

    class NoCluster:
        def running(self) -> bool:
            return False

    monkeypatch.delenv("SEGFLOW_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setattr(services.kafka_cluster, "cluster", lambda *a, **k: NoCluster())
    monkeypatch.setattr(services.local_kafka, "status", lambda home: _status("kafka", True))
    monkeypatch.setattr(services.emulator, "status", lambda home: _status("emulator", False))
    assert main(["services", "status", "--output", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert [(s["name"], s["ready"], s["pid"]) for s in document] == [
        ("kafka", True, 42),
        ("emulator", False, None),
    ]


def test_replay_reset_dry_run_as_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.commands import replay

    plan = [PartitionReset("t", 0, current=10, target=4, low=0, high=12)]

    class FakeOffsets:
        def __init__(self, kafka: Any, group: str) -> None:
            self.group = group

        def resolve(self, specs: list[Any]) -> list[Any]:
            return [("t", 0)]

        def plan(self, keys: list[Any], target: ResetTarget) -> list[PartitionReset]:
            return plan

        def live_members(self) -> list[str]:
            return []

    monkeypatch.setattr(replay, "GroupOffsets", FakeOffsets)
    argv = ["replay", "reset", "--group", "g", "--topic", "t", "--to-earliest", "--dry-run"]
    assert main([*argv, "--output", "json"]) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["group"] == "g" and document["dry_run"] is True
    assert document["live_members"] == 0 and document["current_from"] == "kafka"
    (row,) = document["partitions"]
    assert (row["topic"], row["current"], row["target"], row["re_read"]) == ("t", 10, 4, 6)
    assert "dry run: nothing changed" in err and "TOPIC" in err
    assert main(argv) == 0
    assert "dry run: nothing changed" in capsys.readouterr().out
