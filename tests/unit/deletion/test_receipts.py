"""receipts.py: what `segflow forget` prints."""

from __future__ import annotations

from deletion.receipts import ForgetReport, UserReceipt


def test_report_lines() -> None:
    receipt = UserReceipt("u1", "web", 2, {"tracks": 3, "pages": 0})
    report = ForgetReport("forget-1", [receipt], late_rows=1)
    assert report.summary() == (
        "web: user u1: deleted 3 rows (tracks 3), 2 linked identifiers\n"
        "1 rows that landed during the deletion were deleted too"
    )
    assert ForgetReport("r").summary() == "no source schema found in the warehouse"
