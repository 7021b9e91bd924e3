"""Identity resolves through every hop: an anonymous page view, identify X -> A, alias A -> B,
each loaded by its own flush, and the page view reads as B's in `identified_events`.

Real broker, real connector, the sink as a subprocess (strict Snowflake checks on). The clean
events and identity links are what the processors make of the calls: the processors' own
stitching (`IdentityGraph`) runs here, so the links are the ones they would publish.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from processors.state import ChangelogWrite
from processors.stitching import IdentityGraph
from runtime.rules import IdentityRules
from tests.integration.conftest import unique_name
from tests.integration.sink_support import (
    SinkProcess,
    Warehouse,
    clean_event,
    encode_event,
    encode_link,
    make_topics,
    poll_until,
    produce,
    sink_env,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PARTITIONS = 2


class Processors:
    """The processors' stitching of each call (partition by its key), producing the clean
    event and the identity links as the pipeline publishes them."""

    def __init__(self, ctx: dict[str, Any]) -> None:
        self.ctx = ctx
        self.graph = IdentityGraph(IdentityRules(), max_entries=1000)

    def send(self, call: str, n: int, **ids: str) -> str:
        received = T0 + timedelta(minutes=n)
        anon, user, previous = ids.get("anonymous_id"), ids.get("user_id"), ids.get("previous_id")
        key = previous or anon or user
        writes: list[ChangelogWrite] = []
        stitched = self.graph.stitch(
            call, key, anon, user, previous, zlib.crc32(str(key).encode()) % PARTITIONS, 0, writes
        )
        record = clean_event(call, n, user_id=user, anonymous_id=anon, received_at=received)
        record["anonymousId"] = anon
        record["previousId"] = previous
        record["canonicalUserId"] = stitched.canonical_user_id
        links = [
            {
                "source": "web",
                "identifier": link.identifier,
                "identifierType": link.identifier_type,
                "canonicalUserId": link.canonical_user_id,
                "messageId": record["messageId"],
                "linkedAt": received,
            }
            for link in stitched.links
        ]
        topics, bootstrap = self.ctx["topics"], self.ctx["bootstrap"]
        produce(bootstrap, topics.clean(call), [encode_event(record)])
        if links:
            produce(bootstrap, topics.identity, [encode_link(link) for link in links])
        return str(record["messageId"])


@pytest.fixture
def ctx(kafka_bootstrap: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    prefix = unique_name("idchain") + "."
    database = f"IDCHAIN_{uuid.uuid4().hex[:10].upper()}"
    c: dict[str, Any] = {
        "bootstrap": kafka_bootstrap,
        "topics": make_topics(kafka_bootstrap, prefix, partitions=PARTITIONS),
        "wh": Warehouse(database),
    }
    env = sink_env(
        kafka_bootstrap,
        prefix,
        database,
        unique_name("idchain-sink"),
        SEGFLOW_SINK_FLUSH_AGE_S="0.3",
        SEGFLOW_SINK_HONOUR_SUPPRESSIONS="false",
    )
    sink = SinkProcess(env, tmp_path / "sink.log").start()
    c["sink"] = sink
    try:
        sink.wait_assigned()
        yield c
    finally:
        sink.stop()
    refused = [line for line in sink.log().splitlines() if "strict check:" in line]
    assert not refused, "statements Snowflake would refuse:\n" + "\n".join(refused[:20])


def settles(wh: Warehouse, expected: dict[tuple[str, str], str], events: dict[str, str]) -> None:
    """Poll until identity_map holds `expected` ((identifier, type) -> user) and the view
    resolves each message id of `events` to its user (a call's links may land in several
    flushes: they are keyed by identifier, so they can be in different partitions)."""

    def now() -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
        links = wh.try_query(
            "SELECT identifier, identifier_type, canonical_user_id FROM web.identity_map"
        )
        rows = wh.try_query("SELECT id, resolved_user_id FROM web.identified_events")
        have = {(str(i), str(t)): u for i, t, u in links}
        resolved = {str(m): u for m, u in rows}
        return {k: have.get(k) for k in expected}, {m: resolved.get(m) for m in events}

    try:
        poll_until(lambda: now() == (expected, events), 60, "identities resolved")
    except AssertionError:
        assert now() == (expected, events)  # shows what differs
        raise


def test_an_alias_chain_resolves_an_earlier_anonymous_page_view_to_the_final_user(
    ctx: dict[str, Any],
) -> None:
    wh, proc = ctx["wh"], Processors(ctx)
    x, a, b = "anon-x-" + uuid.uuid4().hex[:6], "user-a", "user-b"
    anon, prev, user = "anonymous_id", "previous_id", "user_id"

    page = proc.send("page", 0, anonymous_id=x)
    proc.send("identify", 1, anonymous_id=x, user_id=a)
    settles(wh, {(x, anon): a, (a, user): a}, {page: a})  # a link learnt after the page view

    proc.send("alias", 2, previous_id=a, user_id=b)  # later flushes: x's row was loaded before
    settles(wh, {(x, anon): b, (a, user): b, (a, prev): b, (b, user): b}, {page: b})
    rows = wh.query(
        "SELECT type, event, anonymous_id, table_name, resolved_user_id, user_id "
        "FROM web.identified_events ORDER BY received_at"
    )
    assert [(r[0], r[3]) for r in rows] == [
        ("page", "pages"),
        ("identify", "identifies"),
        ("alias", "aliases"),
    ]
    assert rows[0][1] == "Home" and rows[0][2] == x and rows[0][5] is None
    assert {r[4] for r in rows} == {b}
    uniques = "SELECT COUNT(DISTINCT resolved_user_id) FROM web.identified_events"
    assert wh.query(uniques) == [(1,)]

    # a new device identified as a after the alias is stored as b's; its track resolves to b
    y = "anon-y-" + uuid.uuid4().hex[:6]
    proc.send("identify", 3, anonymous_id=y, user_id=a)
    track = proc.send("track", 4, anonymous_id=y)
    settles(wh, {(y, anon): b, (a, user): b}, {page: b, track: b})

    # b aliased back to a, newer: the cycle ends at a, the newest link's user, for everyone
    proc.send("alias", 5, previous_id=b, user_id=a)
    settles(
        wh,
        {(x, anon): a, (y, anon): a, (a, user): a, (b, prev): a, (b, user): a},
        {page: a, track: a},
    )
    assert wh.query(uniques) == [(1,)]
