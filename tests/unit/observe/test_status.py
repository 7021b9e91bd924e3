"""What is unhealthy, the exit codes, the JSON shape, and a deadline that holds."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

import observe.status as status_mod
from observe.components import DOWN, NOT_READY, READY, ComponentHealth
from observe.deadletters import DlqReason, DlqStatus
from observe.lag import GroupLag, PartitionLag
from observe.settings import StatusSettings
from observe.status import PipelineStatus, Thresholds, collect, judge
from observe.warehouse import TableLoad
from runtime.settings import KafkaSettings

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LIMITS = Thresholds(max_lag=100, dlq_window_s=3600, max_freshness_s=600)


def _dlq(depth: int, newest_ago_s: float | None) -> DlqStatus:
    newest = (
        ()
        if newest_ago_s is None
        else (DlqReason(0, 1, NOW - timedelta(seconds=newest_ago_s), "c", "r", None, None, None),)
    )
    return DlqStatus("segment.dlq", {0: depth}, newest)


def test_a_healthy_pipeline_has_no_problems() -> None:
    parts = judge(
        (ComponentHealth("sink", "u", READY, "ready"),),
        (GroupLag("g", "stable", 1, (PartitionLag("t", 0, 10, 110),)),),  # 100: not over
        _dlq(0, None),
        (TableLoad("s", "tracks", NOW - timedelta(seconds=600), None),),
        LIMITS,
        NOW,
    )
    assert parts == []


def test_each_kind_of_trouble_is_one_problem() -> None:
    problems = judge(
        (
            ComponentHealth("edge", "u", DOWN, "no answer: refused"),
            ComponentHealth("sink", "u", NOT_READY, "/readyz 503: starting"),
        ),
        (
            GroupLag("g", "stable", 1, (PartitionLag("t", 0, 0, 60), PartitionLag("t", 1, 0, 41))),
            GroupLag("h", "missing", 0),
        ),
        _dlq(3, 60),
        (
            TableLoad("s", "tracks", NOW - timedelta(seconds=601), None),
            TableLoad("s", "e", None, None),
        ),
        LIMITS,
        NOW,
    )
    assert problems == [
        "edge is down: no answer: refused",
        "sink is not ready: /readyz 503: starting",
        "consumer group g lags 101 records on t (more than 100)",
        "consumer group h is unknown to Kafka (never committed)",
        "DLQ segment.dlq received records within 3600 s (newest 2026-12-04T11:59:00+00:00; 3 held)",
        "s.tracks last loaded 601 s ago (more than 600 s)",
    ]


def test_an_old_dlq_record_is_not_a_problem_unless_the_window_is_zero() -> None:
    old = _dlq(3, 7200)
    assert judge((), (), old, None, LIMITS, NOW) == []
    zero = Thresholds(max_lag=100, dlq_window_s=0, max_freshness_s=None)
    assert judge((), (), old, None, zero, NOW) == ["DLQ segment.dlq holds 3 records"]


def test_freshness_is_not_judged_without_a_threshold() -> None:
    stale = (TableLoad("s", "tracks", NOW - timedelta(days=9), None),)
    assert judge((), (), None, stale, Thresholds(100, 3600, None), NOW) == []


@pytest.mark.parametrize(
    ("problems", "unchecked", "code", "healthy"),
    [([], [], 0, True), (["x"], [], 1, False), (["x"], ["y"], 1, False), ([], ["y"], 2, False)],
)
def test_exit_codes(problems: list[str], unchecked: list[str], code: int, healthy: bool) -> None:
    status = PipelineStatus(NOW, problems=problems, unchecked=unchecked)
    assert (status.exit_code, status.healthy) == (code, healthy)
    as_json = json.loads(json.dumps(status.to_dict()))
    assert (as_json["exit_code"], as_json["healthy"]) == (code, healthy)


def test_collect_answers_within_its_deadline_when_parts_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def hanging_probe(name: str, url: str, timeout_s: float) -> ComponentHealth:
        time.sleep(30)
        raise AssertionError("unreachable")

    monkeypatch.setattr(status_mod, "probe", hanging_probe)
    settings = StatusSettings(
        kafka=KafkaSettings(bootstrap="127.0.0.1:1"), warehouse_check=False, timeout_s=1.0
    )
    started = time.monotonic()
    status = collect(settings, components={"edge": "http://127.0.0.1:1"})
    assert time.monotonic() - started < 3
    assert status.exit_code == 2 and status.problems == []
    assert status.unchecked[0] == "component edge: no answer in time"
    assert status.unchecked[1].startswith("kafka: ")
    assert status.groups == () and status.dlq is None and status.tables is None
