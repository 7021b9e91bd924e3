"""The screen: aligned columns, every part named, the verdict and the problems last."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from observe.components import DOWN, READY, ComponentHealth
from observe.deadletters import DlqReason, DlqStatus
from observe.lag import GroupLag, PartitionLag
from observe.report import TABLES_SHOWN, age, render
from observe.status import PipelineStatus
from observe.warehouse import TableLoad

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_age_is_compact() -> None:
    assert [age(None), age(42), age(185), age(7800), age(3 * 86400 + 4 * 3600)] == [
        "-",
        "42s",
        "3m 05s",
        "2h 10m",
        "3d 4h",
    ]


def test_the_screen_shows_every_part_aligned() -> None:
    status = PipelineStatus(
        NOW,
        components=(
            ComponentHealth("edge", "http://127.0.0.1:8088", READY, "ready"),
            ComponentHealth("processors", "http://127.0.0.1:9102", DOWN, "no answer"),
        ),
        groups=(
            GroupLag(
                "segflow-sink",
                "stable",
                2,
                (
                    PartitionLag("segment.events.track", 0, 5, 125),
                    PartitionLag("segment.events.track", 1, None, 3),
                ),
            ),
        ),
        dlq=DlqStatus(
            "segment.dlq",
            {0: 3},
            (DlqReason(0, 2, NOW, "codec", "unreadable record", "segment.raw.track", 1, 9),),
        ),
        tables=tuple(
            TableLoad("demo", f"t{i:02d}", NOW - timedelta(seconds=i), None)
            for i in range(TABLES_SHOWN + 3)
        ),
        suppressed_users=4,
        problems=["processors is down: no answer"],
    )
    screen = render(status)
    lines = screen.splitlines()
    assert lines[0] == "segflow status  2026-12-04 12:00:00 UTC  UNHEALTHY"
    assert "  edge        ready  http://127.0.0.1:8088  ready" in lines
    assert "  processors  down   http://127.0.0.1:9102  no answer" in lines
    assert "  segflow-sink            stable, 2 members  120" in lines
    assert (
        "    segment.events.track                     120  2 partitions, 1 never committed" in lines
    )
    assert "dlq  segment.dlq: 3 records, newest 2026-12-04 12:00:00" in lines
    assert any("codec" in ln and "segment.raw.track[1]@9" in ln for ln in lines)
    assert "  demo.t00  2026-12-04 12:00:00  0s   -" in lines
    assert "  ... 3 more (--output json lists all)" in lines
    assert "suppressed users  4" in lines
    assert lines[-2:] == ["problems", "  - processors is down: no answer"]


def test_parts_not_checked_say_so() -> None:
    screen = render(PipelineStatus(NOW, unchecked=["kafka: no answer"]))
    assert "  g  missing, 0 members  -" in render(
        PipelineStatus(NOW, groups=(GroupLag("g", "missing", 0),))
    )
    assert "UNKNOWN" in screen.splitlines()[0]
    assert "dlq  (not checked)" in screen and "warehouse  (not checked)" in screen
    assert screen.rstrip().endswith("not checked\n  - kafka: no answer")
