"""The edge's request outcomes: what the dashboards and the 5xx alert group by."""

from __future__ import annotations

import pytest

from ingest.metrics import outcome_of


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "accepted"),
        (400, "invalid"),
        (413, "invalid"),
        (401, "unauthorized"),
        (403, "unauthorized"),
        (404, "not_found"),
        (405, "not_found"),
        (429, "rate_limited"),
        (503, "unavailable"),
        (500, "error"),
        (502, "error"),
        (504, "error"),
    ],
)
def test_every_status_has_the_outcome_its_alert_expects(status: int, outcome: str) -> None:
    assert outcome_of(status) == outcome
