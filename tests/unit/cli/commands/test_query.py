from __future__ import annotations

from cli.commands.query import format_table


def test_format_table() -> None:
    out = format_table(["event", "n"], [("order_completed", 3), (None, 10)])
    assert out.splitlines() == [
        "event           | n ",
        "----------------+---",
        "order_completed | 3 ",
        "NULL            | 10",
    ]
