"""Events of suppressed users: the decision, and what the pipeline leaves of such an event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from processors.dedupe import Deduper
from processors.drift import DriftDetector, KnownFields
from processors.masking import Masker
from processors.pipeline import Pipeline
from processors.state import ChangelogWrite
from processors.stitching import IdentityGraph
from processors.suppressions import SUPPRESSED, is_suppressed_event
from runtime.rules import load_rules

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class Listed:
    """A suppression list as a set of identifiers (what the processors use of SuppressionList)."""

    def __init__(self, *identifiers: str) -> None:
        self.ids = set(identifiers)

    @property
    def identifiers(self) -> set[str]:
        return self.ids


@pytest.mark.parametrize(
    ("user_id", "anonymous_id", "previous_id", "canonical"),
    [
        ("u-gone", None, None, "u-gone"),
        (None, "a-gone", None, None),
        ("u-new", "a-1", "u-gone", "u-new"),  # alias from the suppressed userId
        (None, "a-unlisted", None, "u-gone"),  # resolved through a link made earlier
        ("u-old", "a-1", None, "u-gone"),  # an older userId aliased to the suppressed one
    ],
)
def test_an_event_is_suppressed_by_any_of_its_identifiers(
    user_id: str | None, anonymous_id: str | None, previous_id: str | None, canonical: str | None
) -> None:
    assert is_suppressed_event({"u-gone", "a-gone"}, user_id, anonymous_id, previous_id, canonical)


@pytest.mark.parametrize(
    ("user_id", "anonymous_id", "previous_id", "canonical"),
    [
        ("u-2", "a-2", None, "u-2"),
        (None, "a-2", None, None),
        ("u-2", None, "a-2", "u-2"),
        (None, None, None, None),
    ],
)
def test_other_users_events_are_not(
    user_id: str | None, anonymous_id: str | None, previous_id: str | None, canonical: str | None
) -> None:
    suppressed = {"u-gone", "a-gone"}
    assert not is_suppressed_event(suppressed, user_id, anonymous_id, previous_id, canonical)


def pipeline(check: Listed | None) -> Pipeline:
    rules = load_rules(None)
    return Pipeline(
        Deduper(86_400, 1000),
        Masker(rules.pii, b"key", "v1"),
        IdentityGraph(rules.identity, 1000),
        DriftDetector(rules.tracking_plan, KnownFields(1000)),
        rules.tracking_plan.mode,
        check,
    )


def raw(call_type: str, message_id: str, **ids: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "type": call_type,
        "messageId": message_id,
        "source": "web",
        "anonymousId": None,
        "userId": None,
        "previousId": None,
        "groupId": None,
        "event": "Order Completed" if call_type == "track" else None,
        "name": None,
        "category": None,
        "receivedAt": NOW,
        "sentAt": NOW,
        "originalTimestamp": NOW - timedelta(seconds=5),
        "timestamp": NOW - timedelta(seconds=5),
        "properties": orjson.dumps({"brand_new_prop": 1}).decode(),
        "traits": orjson.dumps({"email": "gone@example.com"}).decode(),
        "context": "{}",
        "integrations": "{}",
        "channel": "server",
        "extra": "{}",
    }
    rec.update(ids)
    return rec


def key_of(rec: dict[str, Any]) -> bytes:
    if rec["type"] == "alias" and rec["previousId"]:
        return str(rec["previousId"]).encode()
    return str(rec["anonymousId"] or rec["userId"]).encode()


@pytest.mark.parametrize(
    "rec",
    [
        raw("track", "m1", userId="u-gone", anonymousId="a-9"),
        raw("identify", "m2", anonymousId="a-gone", userId="u-other"),
        raw("alias", "m3", previousId="u-gone", userId="u-renamed"),
        raw("page", "m4", anonymousId="a-gone"),
    ],
    ids=["user_id", "listed_anonymous_id", "alias_previous_id", "anonymous_only"],
)
def test_a_suppressed_event_leaves_no_record_link_change_or_state(rec: dict[str, Any]) -> None:
    p = pipeline(Listed("u-gone", "a-gone"))
    writes: list[ChangelogWrite] = []
    out = p.process(rec, key_of(rec), 0, NOW, writes)
    assert out.dropped == SUPPRESSED and out.clean is None
    assert out.links == [] and out.changes == [] and out.masked == []
    assert writes == []
    assert len(p.deduper.state) == 0 and len(p.graph.state) == 0 and len(p.drift.known) == 0


def test_a_link_made_before_the_suppression_resolves_to_the_suppressed_user() -> None:
    """anonymousId a-late was linked to u-gone before the user was forgotten and is missing
    from the suppression's identifiers: the stitching's canonical id catches its events."""
    check = Listed()
    p = pipeline(check)
    identify = raw("identify", "m1", anonymousId="a-late", userId="u-gone")
    assert p.process(identify, b"a-late", 0, NOW, []).clean is not None
    check.ids.update({"u-gone", "a-gone"})
    track = raw("track", "m2", anonymousId="a-late")
    writes: list[ChangelogWrite] = []
    assert p.process(track, b"a-late", 0, NOW, writes).dropped == SUPPRESSED
    assert writes == []
    # a userId aliased to the suppressed one: its events resolve to it when keyed by it
    alias = raw("alias", "m3", previousId="u-older", userId="u-gone")
    check.ids.clear()
    assert p.process(alias, b"u-older", 0, NOW, []).clean is not None
    check.ids.add("u-gone")
    later = raw("track", "m4", userId="u-older")
    assert p.process(later, b"u-older", 0, NOW, []).dropped == SUPPRESSED


def test_other_users_are_processed_and_an_empty_list_changes_nothing() -> None:
    for check in (Listed("u-gone", "a-gone"), Listed(), None):
        p = pipeline(check)
        rec = raw("identify", "m1", anonymousId="a-2", userId="u-2")
        out = p.process(rec, b"a-2", 0, NOW, [])
        assert out.dropped is None and out.clean is not None
        assert out.clean["canonicalUserId"] == "u-2"
        assert [lk["identifier"] for lk in out.links] == ["a-2", "u-2"]


def test_a_list_of_other_users_changes_no_outcome() -> None:
    """With a non-empty list the pipeline resolves each event before stitching (and calls that
    link nothing are not stitched again): outcomes equal those without a list."""
    events = [
        raw("identify", "m1", anonymousId="a-1", userId="u-1"),
        raw("track", "m2", anonymousId="a-1"),
        raw("alias", "m3", previousId="u-1", userId="u-2"),
        raw("page", "m4", userId="u-1"),
        raw("track", "m5", anonymousId="a-1", userId="u-1"),
        raw("group", "m6", anonymousId="a-3"),
        raw("identify", "m7", userId="u-4"),
        raw("screen", "m8", userId="u-4"),
    ]

    def outcomes(check: Listed | None) -> list[tuple[Any, ...]]:
        p = pipeline(check)
        out = []
        for rec in events:
            writes: list[ChangelogWrite] = []
            o = p.process(dict(rec), key_of(rec), 0, NOW, writes)
            out.append((o.clean, o.links, o.changes, o.refused, o.dropped, writes))
        return out

    assert outcomes(Listed("u-gone", "a-gone")) == outcomes(None)


def test_a_suppressed_copy_of_a_processed_event_is_dropped() -> None:
    """A replay after the user was forgotten: the copy is suppressed, not a duplicate."""
    check = Listed()
    p = pipeline(check)
    rec = raw("track", "m1", userId="u-gone")
    assert p.process(dict(rec), b"u-gone", 0, NOW, []).clean is not None
    check.ids.add("u-gone")
    assert p.process(dict(rec), b"u-gone", 0, NOW, []).dropped == SUPPRESSED
