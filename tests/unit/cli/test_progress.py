from __future__ import annotations

import io

from cli.progress import Progress
from tests.unit.clock import ManualClock


def test_plain_stream_prints_a_line_every_interval() -> None:
    out, clock = io.StringIO(), ManualClock()
    progress = Progress("backfill", total=200, stream=out, every_s=5, clock=clock)
    progress.advance(50)
    assert out.getvalue() == ""
    clock.now = 5.0
    progress.advance(50)
    assert out.getvalue().splitlines() == [
        "backfill [############------------]  50.0% 100/200 events 20/s 5s"
    ]
    progress.note = "3 files"
    progress.finish()
    assert out.getvalue().splitlines()[-1].endswith("100/200 events 20/s 5s 3 files")


def test_without_total_counts_only() -> None:
    out, clock = io.StringIO(), ManualClock()
    progress = Progress("copy", stream=out, unit="records", clock=clock)
    clock.now = 2.0
    progress.advance(10)
    progress.finish()
    assert out.getvalue().splitlines()[-1] == "copy 10 records 5/s 2s"
