"""The per-event function: clean record shape, duplicates, DLQ errors, changelog writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from processors.dedupe import Deduper
from processors.drift import DriftDetector, KnownFields
from processors.masking import Masker
from processors.pipeline import Pipeline, record_key
from processors.state import ChangelogWrite
from processors.stitching import IdentityGraph
from runtime.rules import PiiRule, load_rules
from schemas.avro_compiled import micros
from schemas.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec
from schemas.errors import RecordError

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def pipeline() -> Pipeline:
    rules = load_rules(None)
    return Pipeline(
        Deduper(86_400, 1000),
        Masker(rules.pii, b"key", "v3"),
        IdentityGraph(rules.identity, 1000),
        DriftDetector(rules.tracking_plan, KnownFields(1000)),
        rules.tracking_plan.mode,
    )


def raw(**over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "type": "identify",
        "messageId": "m1",
        "source": "web",
        "anonymousId": "a1",
        "userId": "u1",
        "previousId": None,
        "groupId": None,
        "event": None,
        "name": None,
        "category": None,
        "receivedAt": NOW,
        "sentAt": NOW,
        "originalTimestamp": NOW - timedelta(seconds=90),
        "timestamp": NOW - timedelta(seconds=90),
        "properties": "{}",
        "traits": orjson.dumps({"email": "A@B.co", "new_trait": 1}).decode(),
        "context": '{"ip": "10.1.2.3"}',
        "integrations": "{}",
        "channel": "server",
        "extra": "{}",
    }
    rec.update(over)
    return rec


def test_clean_record_fits_the_clean_schema_and_carries_annotations():
    writes: list[ChangelogWrite] = []
    out = pipeline().process(raw(), b"a1", 2, NOW, writes)
    assert out.clean is not None
    decoded = AvroCodec().decode(CLEAN_EVENT, AvroCodec().encode(CLEAN_EVENT, out.clean))
    assert decoded["canonicalUserId"] == "u1"
    assert decoded["piiKeyVersion"] == "v3"
    assert set(decoded["maskedFields"]) == {"traits.email:hash", "context.ip:truncate"}
    assert "A@B.co" not in decoded["traits"] and "10.1.2.3" not in decoded["context"]
    assert decoded["processedAt"] == NOW
    assert out.lateness_s == 90
    assert [c["field"] for c in out.changes] == ["traits.new_trait"]
    assert {w.table for w in writes} == {"dedupe", "identity", "drift"}
    assert all(w.partition == 2 for w in writes)
    assert [lk["identifier"] for lk in out.links] == ["a1", "u1"]


def test_second_copy_is_a_duplicate_with_no_output():
    p = pipeline()
    p.process(raw(), b"a1", 0, NOW, [])
    writes: list[ChangelogWrite] = []
    out = p.process(raw(), b"a1", 0, NOW, writes)
    assert out.duplicate and out.links == [] and writes == []


def test_untouched_maps_pass_through_as_written():
    out = pipeline().process(raw(type="page", traits="{}", context='{"a" : 1}'), b"a1", 0, NOW, [])
    assert out.clean is not None and out.clean["context"] == '{"a" : 1}'


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"type": "bogus"}, "invalid_record"),
        ({"messageId": ""}, "invalid_record"),
        ({"properties": "[1]"}, "invalid_json"),
        ({"traits": "{oops"}, "invalid_json"),
    ],
)
def test_bad_records_raise_record_errors_and_change_no_state(over, code):
    p = pipeline()
    with pytest.raises(RecordError) as info:
        p.process(raw(**over), b"a1", 0, NOW, [])
    assert info.value.code == code
    assert len(p.deduper.state) == 0


def test_record_key():
    assert record_key({"type": "alias", "previousId": "p", "userId": "u"}) == "p"
    assert record_key({"type": "track", "anonymousId": "a", "userId": "u"}) == "a"
    assert record_key({"type": "track", "anonymousId": None, "userId": "u"}) == "u"


def echo_context(sync: str = "users-to-segment") -> str:
    return orjson.dumps({"ip": "10.1.2.3", "segflow": {"reverse_etl": sync}}).decode()


@pytest.mark.parametrize(
    "over",
    [
        {"context": echo_context()},
        {"integrations": '{"Segflow": false}'},
        # the marker's key spelt with a JSON escape is still the marker
        {"context": '{"\\u0073egflow": {"reverse_etl": "s"}}'},
    ],
)
def test_reverse_etl_echoes_are_dropped_before_dedupe_and_leave_no_state(over):
    p = pipeline()
    writes: list[ChangelogWrite] = []
    out = p.process(raw(**over), b"a1", 0, NOW, writes)
    assert out.clean is None and out.dropped == "reverse_etl_echo" and not out.duplicate
    assert out.links == [] and out.changes == [] and writes == []
    assert len(p.deduper.state) == 0 and len(p.graph.state) == 0
    # the same messageId arriving as real activity later is not taken for a duplicate
    again = p.process(raw(), b"a1", 0, NOW, [])
    assert again.clean is not None


def test_segflow_elsewhere_in_the_context_is_no_echo():
    ctx = orjson.dumps({"app": {"name": "segflow-demo"}, "segflow": {"other": 1}}).decode()
    out = pipeline().process(raw(context=ctx, integrations='{"Segflow": true}'), b"a1", 0, NOW, [])
    assert out.clean is not None and out.dropped is None


def test_timestamps_as_micros_give_the_same_clean_bytes():
    codec = AvroCodec()
    data = codec.encode(RAW_EVENT, raw())
    as_datetimes = pipeline().process(codec.decode(RAW_EVENT, data), b"a1", 0, NOW, [])
    as_micros = pipeline().process(codec.decode(RAW_EVENT, data, micros=True), b"a1", 0, NOW, [])
    assert as_datetimes.clean is not None and as_micros.clean is not None
    assert isinstance(as_micros.clean["receivedAt"], int)
    assert as_micros.lateness_s == as_datetimes.lateness_s == 90
    assert codec.encode(CLEAN_EVENT, as_micros.clean) == codec.encode(
        CLEAN_EVENT, as_datetimes.clean
    )
    assert [lk["linkedAt"] for lk in as_micros.links] == [micros(NOW)] * 2


def test_a_rule_on_a_whole_root_empties_it_on_the_clean_record():
    rules = load_rules(None)
    pii = rules.pii.model_copy(update={"rules": [PiiRule(path="traits", action="drop")]})
    p = Pipeline(
        Deduper(86_400, 1000),
        Masker(pii, b"key", "v1"),
        IdentityGraph(rules.identity, 1000),
        DriftDetector(rules.tracking_plan, KnownFields(1000)),
        rules.tracking_plan.mode,
    )
    out = p.process(raw(), b"a1", 0, NOW, [])
    assert out.clean is not None
    assert out.clean["traits"] == "{}" and "traits:drop" in out.masked
    assert "A@B.co" not in AvroCodec().encode(CLEAN_EVENT, out.clean).decode("utf-8", "replace")


SECRET_EMAIL = "jane.doe@example.com"
SECRET_PHONE = "+1 415 555 2671"
SECRET_CARD = "4111 1111 1111 1111"


def _secrets_in(data: bytes | str) -> list[str]:
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return [s for s in (SECRET_EMAIL, SECRET_PHONE, SECRET_CARD, "2671", "jane.doe") if s in text]


def _strict_pipeline() -> Pipeline:
    rules = load_rules(None)
    plan = rules.tracking_plan.model_copy(update={"mode": "strict"})
    return Pipeline(
        Deduper(86_400, 1000),
        Masker(rules.pii, b"key", "v3"),
        IdentityGraph(rules.identity, 1000),
        DriftDetector(plan, KnownFields(1000)),
        plan.mode,
    )


@pytest.mark.parametrize("make", [pipeline, _strict_pipeline], ids=["evolve", "strict"])
def test_pii_in_names_reaches_no_clean_record_schema_change_or_changelog(make):
    """An event named with a phone number, a property key that is an email, a nested key and an
    integrations value holding a card number: none of them leaves the pipeline in clear, in the
    clean record (table name, columns, _unmapped), the schema changes or the drift changelog."""
    record = raw(
        type="track",
        event=f"Called {SECRET_PHONE}",
        traits="{}",
        properties=orjson.dumps(
            {SECRET_EMAIL: True, "cart": {SECRET_CARD: 1}, "plan": "pro"}
        ).decode(),
        context=orjson.dumps({"campaign": {SECRET_EMAIL: "x"}}).decode(),
        integrations=orjson.dumps({"Custom": {"card": SECRET_CARD}}).decode(),
    )
    writes: list[ChangelogWrite] = []
    out = make().process(record, b"a1", 0, NOW, writes)
    assert out.clean is not None
    codec = AvroCodec()
    clean = codec.decode(CLEAN_EVENT, codec.encode(CLEAN_EVENT, out.clean))
    assert _secrets_in(codec.encode(CLEAN_EVENT, out.clean)) == []
    assert clean["event"].startswith("redacted_phone_")
    assert "event:redact_name" in clean["maskedFields"]
    assert any(m.endswith(":redact_name") and "properties." in m for m in clean["maskedFields"])
    assert json_keys(clean["properties"]) | json_keys(clean["unmapped"]) >= {"plan"}
    assert out.changes, "new properties are reported"
    for change in out.changes:
        assert change["event"] == clean["event"]
        assert _secrets_in(orjson.dumps(change, default=str)) == []
    assert any(c["field"].startswith("properties.redacted_email_") for c in out.changes)
    for w in writes:
        assert _secrets_in(w.key) == [] and _secrets_in(w.value or b"") == []


def json_keys(text: str) -> set[str]:
    value = orjson.loads(text)
    out: set[str] = set()
    for k, v in value.items():
        out.add(k)
        if isinstance(v, dict):
            out |= json_keys(orjson.dumps(v).decode())
    return out


def test_page_names_and_categories_holding_pii_are_replaced():
    record = raw(
        type="page",
        name=f"Profile {SECRET_EMAIL}",
        category=SECRET_PHONE.replace(" ", "\u00a0"),
        traits="{}",
    )
    out = pipeline().process(record, b"a1", 0, NOW, [])
    assert out.clean is not None
    assert out.clean["name"].startswith("redacted_email_")
    assert out.clean["category"].startswith("redacted_phone_")
    assert {"name:redact_name", "category:redact_name"} <= set(out.masked)
    assert _secrets_in(AvroCodec().encode(CLEAN_EVENT, out.clean)) == []
