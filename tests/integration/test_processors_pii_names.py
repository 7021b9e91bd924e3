"""`segflow process` on the real broker: PII in names (a property key, an event name, a page name)
and in integrations never leaves the processors in clear, on the clean topics, the schema
changes, the drift changelog or the schema-change webhook; the DLQ, which holds raw records,
keeps them only as long as the raw topics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from schemas.codec import CLEAN_EVENT, SCHEMA_CHANGE
from tests.integration.processors_harness import (
    CODEC,
    Env,
    Read,
    TopicReader,
    make_env,
    produce,
    raw_event,
    start_worker,
    stop_worker,
)
from tests.integration.test_processors_pipeline import Hook

pytestmark = pytest.mark.integration

EMAIL = "jane.doe@example.com"
PHONE = "+1 415 555 2671"
CARD = "4111 1111 1111 1111"
# what must appear nowhere downstream (the masked values keep a phone's or card's last 4 digits)
SECRETS = [EMAIL, "jane.doe", "415 555", "415\u00a0555", "4111 1111", "4111111111111111"]


def _leaks(data: bytes | str | None) -> list[str]:
    if data is None:
        return []
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return [s for s in SECRETS if s in text]


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("pii-names")
    env = make_env(kafka_bootstrap, tmp, partitions=1)
    hook = Hook()
    track = raw_event(
        "track",
        anonymous_id="anon-pii",
        event=f"Called {PHONE}",
        properties={EMAIL: True, "plan": "pro", "cart": {CARD: 1}},
        context={"note": "call +1\u00a0415\u00a0555\u00a02671"},
    )
    track["integrations"] = orjson.dumps({"Custom": {"card": CARD, EMAIL: True}}).decode()
    page = raw_event("page", anonymous_id="anon-pii", properties={"path": "/me"})
    page["name"] = f"Profile of {EMAIL}"
    produce(env.bootstrap, env.topics, [track, page])
    drift_changelog = f"{env.app_id}-drift-changelog"
    worker = start_worker(
        env,
        tmp / "worker.log",
        SEGFLOW_PROCESS_ALERT_WEBHOOK_URL=hook.url,
        SEGFLOW_PROCESS_ALERT_MIN_INTERVAL_S="0",
        SEGFLOW_PROCESS_PII_HMAC_KEY="pii-names-test-key-0123456789abcdef0123",
    )
    reader = TopicReader(
        env.bootstrap,
        [*env.topics.all_clean(), env.topics.schema_changes, env.topics.dlq, drift_changelog],
    )
    try:
        records = reader.poll_until(
            lambda rs: (
                sum(r.topic in env.topics.all_clean() for r in rs) >= 2
                and any(r.topic == env.topics.schema_changes for r in rs)
                and any(r.topic == drift_changelog for r in rs)
            ),
            timeout_s=120,
        )
        reader.poll_until(lambda rs: bool(hook.posts), timeout_s=15)
        yield {
            "env": env,
            "records": records,
            "hook": hook,
            "drift_changelog": drift_changelog,
            "log": tmp / "worker.log",
        }
    finally:
        reader.close()
        stop_worker(worker)
        hook.server.shutdown()


def _of(run: dict[str, Any], *topics: str) -> list[Read]:
    return [r for r in run["records"] if r.topic in topics]


def test_clean_events_carry_no_pii_in_names_values_or_integrations(run: dict[str, Any]) -> None:
    env: Env = run["env"]
    clean = _of(run, *env.topics.all_clean())
    assert len(clean) == 2, Path(run["log"]).read_text()[-3000:]
    for r in clean:
        assert _leaks(r.value) == [] and _leaks(r.key) == []
        assert all(_leaks(v) == [] for v in r.headers.values())
    events = {e["type"]: e for e in (CODEC.decode(CLEAN_EVENT, r.value) for r in clean)}
    track, page = events["track"], events["page"]
    assert track["event"].startswith("redacted_phone_")  # the per-event table's name
    assert "event:redact_name" in track["maskedFields"]
    properties = json.loads(track["properties"])
    assert properties["plan"] == "pro"
    assert any(k.startswith("redacted_email_") for k in properties)  # a column name
    assert any(k.startswith("redacted_card_") for k in properties["cart"])
    assert json.loads(track["integrations"])["Custom"]["card"] == "***1111"
    assert json.loads(track["context"])["note"] == "call ***2671"
    assert page["name"].startswith("redacted_email_")


def test_schema_changes_changelog_and_alerts_carry_only_masked_names(
    run: dict[str, Any],
) -> None:
    env: Env = run["env"]
    changes = _of(run, env.topics.schema_changes)
    decoded = [CODEC.decode(SCHEMA_CHANGE, r.value) for r in changes]
    fields = {c["field"] for c in decoded}
    assert any(f.startswith("properties.redacted_email_") for f in fields), fields
    assert "properties.plan" in fields
    for r in changes + _of(run, run["drift_changelog"]):
        assert _leaks(r.key) == [] and _leaks(r.value) == []
    tracked = [c for c in decoded if c["callType"] == "track"]
    assert tracked and all(c["event"].startswith("redacted_phone_") for c in tracked)
    hook: Hook = run["hook"]
    assert hook.posts, "a schema-change alert was posted"
    text = "\n".join(p["text"] for p in hook.posts)
    assert "redacted_email_" in text and _leaks(text) == []


def test_the_dlq_keeps_raw_records_no_longer_than_the_raw_topics(run: dict[str, Any]) -> None:
    env: Env = run["env"]
    assert _of(run, env.topics.dlq) == []  # nothing of these events was routed there
    admin = AdminClient({"bootstrap.servers": env.bootstrap})
    resources = [
        ConfigResource(ConfigResource.Type.TOPIC, t)
        for t in (env.topics.dlq, env.topics.raw("track"))
    ]
    configs = {r.name: f.result(10) for r, f in admin.describe_configs(resources).items()}
    dlq = configs[env.topics.dlq]["retention.ms"].value
    assert dlq == configs[env.topics.raw("track")]["retention.ms"].value == str(3 * 86_400_000)
