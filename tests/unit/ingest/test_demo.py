from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from ingest.demo import journeys, malformed_requests

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def test_every_call_type_and_the_story_of_a_product() -> None:
    calls = list(journeys(200, now=NOW))
    methods = Counter(c.method for c in calls)
    assert set(methods) == {"page", "track", "identify", "group", "screen", "alias"}
    events = Counter(c.kwargs.get("event") for c in calls if c.method == "track")
    assert events["Order Completed"] >= 200 and events["Signed Up"] >= 200
    pages = [c for c in calls if c.method == "page"]
    assert all(c.kwargs["context"]["campaign"]["source"] for c in pages)
    identifies = [c for c in calls if c.method == "identify"]
    assert all("@" in c.kwargs["traits"]["email"] for c in identifies)
    assert all(c.kwargs["traits"]["phone"] for c in identifies)


def test_duplicates_repeat_a_message_id_and_late_events_are_old() -> None:
    calls = list(journeys(300, now=NOW, duplicate_fraction=0.1, late_fraction=0.1))
    dupes = [c for c in calls if c.duplicate]
    originals = {c.message_id for c in calls if not c.duplicate}
    assert dupes and all(d.message_id in originals for d in dupes)
    assert len(originals) == len(calls) - len(dupes)
    late = [c for c in calls if c.kwargs["timestamp"] < NOW]
    assert 0.05 < len(late) / len(calls) < 0.2


def test_same_seed_same_story() -> None:
    a = [(c.method, c.kwargs.get("event")) for c in journeys(20, seed=3, now=NOW)]
    b = [(c.method, c.kwargs.get("event")) for c in journeys(20, seed=3, now=NOW)]
    assert a == b


def test_malformed_requests_are_described() -> None:
    bad = malformed_requests("k")
    assert len(bad) >= 4
    assert all(path.startswith("/v1/") and reason for path, _, reason in bad)
