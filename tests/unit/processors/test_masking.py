"""PII masking of event documents: each action, wildcards, precedence, the detector, names."""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from typing import Any

import orjson
import pytest

from processors.masking import Masker
from processors.pii_values import hash_value, redacted_name
from runtime.rules import PiiDetector, PiiNames, PiiRule, PiiRules
from schemas.errors import ConfigError

KEY = b"k" * 32


def doc(**roots: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "properties": {},
        "traits": {},
        "context": {},
        "integrations": {},
        "extra": {},
    }
    base.update(roots)
    return base


def masker(*rules: PiiRule, detector: PiiDetector | None = None) -> Masker:
    return Masker(PiiRules(rules=list(rules), detector=detector or PiiDetector()), KEY, "v7")


def test_hash_rule_replaces_value_and_reports_key_use():
    d = doc(traits={"email": "Jo@Example.com", "name": "Jo"})
    entries, hashed = masker(PiiRule(path="traits.email", action="hash")).apply(d)
    assert d["traits"]["email"] == hash_value("jo@example.com", KEY)
    assert d["traits"]["name"] == "Jo"
    assert entries == ["traits.email:hash"]
    assert hashed


def test_truncate_rule_truncates_or_drops_what_is_no_ip():
    m = masker(PiiRule(path="context.ip", action="truncate"))
    d = doc(context={"ip": "198.51.100.23"})
    assert m.apply(d)[0] == ["context.ip:truncate"]
    assert d["context"]["ip"] == "198.51.100.0"
    d = doc(context={"ip": "garbage"})
    assert m.apply(d)[0] == ["context.ip:drop"]
    assert "ip" not in d["context"]


def test_drop_and_keep():
    m = masker(
        PiiRule(path="traits.password", action="drop"),
        PiiRule(path="properties.email", action="keep"),
        detector=PiiDetector(enabled=True, kinds=["email"], action="mask"),
    )
    d = doc(traits={"password": "hunter2"}, properties={"email": "keep@me.io"})
    entries, _ = m.apply(d)
    assert d["traits"] == {}
    assert d["properties"]["email"] == "keep@me.io"  # keep wins over the detector
    assert entries == ["traits.password:drop"]


def test_wildcard_matches_one_level_of_objects_and_arrays():
    m = masker(PiiRule(path="properties.*.phone", action="mask", keep="last4"))
    d = doc(
        properties={
            "billing": {"phone": "555-123-9876"},
            "items": [{"phone": "555 000 1111"}],
            "phone": "top-level is not matched",
        }
    )
    entries, _ = m.apply(d)
    assert d["properties"]["billing"]["phone"] == "***9876"
    assert d["properties"]["phone"] == "top-level is not matched"
    assert sorted(entries) == ["properties.billing.phone:mask"]
    m2 = masker(PiiRule(path="properties.items.*.phone", action="drop"))
    entries, _ = m2.apply(d)
    assert entries == ["properties.items.0.phone:drop"]
    assert d["properties"]["items"] == [{}]
    # a wildcard before an index reaches into arrays; before a name, objects only
    d = doc(properties={"a": [{"phone": "1"}, {"x": 1}], "b": {"phone": "2"}, "c": ["q"]})
    entries, _ = masker(PiiRule(path="properties.*.0", action="drop")).apply(d)
    assert sorted(entries) == ["properties.a.0:drop", "properties.c.0:drop"]
    d = doc(properties={"a": [{"phone": "1"}], "b": {"phone": "2", "q": 3}, "c": "x"})
    entries, _ = masker(PiiRule(path="properties.*.*", action="drop")).apply(d)
    assert sorted(entries) == [
        "properties.a.0:drop",
        "properties.b.phone:drop",
        "properties.b.q:drop",
    ]


def test_exact_rule_wins_over_wildcard_rule():
    m = masker(
        PiiRule(path="traits.*", action="drop"),
        PiiRule(path="traits.email", action="hash"),
    )
    d = doc(traits={"email": "a@b.co", "age": 3})
    entries, _ = m.apply(d)
    assert set(entries) == {"traits.email:hash", "traits.age:drop"}
    assert list(d["traits"]) == ["email"]


def test_missing_and_null_fields_are_left_alone():
    m = masker(PiiRule(path="traits.email", action="hash"))
    d = doc(traits={"email": None})
    assert m.apply(d) == ([], False)
    assert m.apply(doc()) == ([], False)


def test_hash_rules_need_a_key():
    with pytest.raises(ConfigError, match="PII_HMAC_KEY"):
        Masker(PiiRules(rules=[PiiRule(path="traits.email", action="hash")]), None, "v1")
    Masker(PiiRules(rules=[PiiRule(path="traits.x", action="drop")]), None, "v1")


def test_detector_masks_findings_inside_text_anywhere():
    m = masker(detector=PiiDetector(enabled=True, kinds=["email", "phone", "card"], action="mask"))
    d = doc(
        properties={"note": "mail jo@x.org or call +44 20 7946 0958", "n": 5},
        context={"page": {"url": "https://x.io/?card=4111 1111 1111 1111"}},
        traits={"list": ["plain", "bob@corp.com"]},
    )
    entries, hashed = m.apply(d)
    assert d["properties"]["note"] == "mail ***@x.org or call ***0958"
    assert d["context"]["page"]["url"] == "https://x.io/?card=***1111"
    assert d["traits"]["list"] == ["plain", "***@corp.com"]
    assert set(entries) == {
        "properties.note:mask",
        "context.page.url:mask",
        "traits.list.1:mask",
    }
    assert not hashed


def test_detector_hash_and_drop():
    d = doc(properties={"who": "jo@x.org"})
    m = masker(detector=PiiDetector(enabled=True, kinds=["email"], action="hash"))
    assert m.apply(d) == (["properties.who:hash"], True)
    assert d["properties"]["who"] == hash_value("jo@x.org", KEY)
    d = doc(properties={"who": "jo@x.org", "ok": "fine"})
    m = masker(detector=PiiDetector(enabled=True, kinds=["email"], action="drop"))
    m.apply(d)
    assert d["properties"] == {"ok": "fine"}


def test_detector_leaves_fields_a_rule_handled():
    m = masker(
        PiiRule(path="traits.email", action="hash"),
        detector=PiiDetector(enabled=True, kinds=["email"], action="mask"),
    )
    d = doc(traits={"email": "jo@x.org"})
    entries, _ = m.apply(d)
    assert entries == ["traits.email:hash"]


def test_the_document_prescreen_never_skips_a_finding_the_walk_makes():
    """With the roots' JSON texts given, the detector and the key screen skip a root whose text
    as a whole holds no finding; on random documents (PII next to ids, dates, IPs, escapes,
    unicode look-alikes, nesting, in values and in keys) that must mask exactly what a walk over
    every key and value masks."""
    import random

    fragments = [
        "jo@x.org",
        "a.b+c@mail.example.co.uk",
        "+44 20 7946 0958",
        "(555) 123-4567",
        "555-123-4567",
        "0171 2345678",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111112",
        "+1\u00a0415\u00a0555\u00a02671",
        "\uff0b\uff11 \uff14\uff11\uff15 \uff15\uff15\uff15 \uff12\uff16\uff17\uff11",
        "\uff15\uff15\uff15",
        "\u00a0",
        "\uff20",
        "jo\uff20x.org",
        "2026-01-05T12:00:00Z",
        "203.0.113.42",
        "ord-109951162776",
        "SKU-123456",
        "1735689600123",
        "Chrome/124.0.0.0 Safari/537.36",
        "\n",
        "\t",
        '"',
        "\\",
        "/",
        "é",
        "日本",
        " ",
        "-",
        "+",
        "call ",
        "x",
        "",
    ]
    rnd = random.Random(11)

    def text() -> str:
        return "".join(rnd.choice(fragments) for _ in range(rnd.randrange(1, 5)))

    def key() -> str:
        return text() if rnd.random() < 0.3 else text()[:3]

    def value(depth: int) -> Any:
        pick = rnd.random()
        if depth < 3 and pick < 0.15:
            return {f"k{i}{key()}": value(depth + 1) for i in range(rnd.randrange(1, 4))}
        if depth < 3 and pick < 0.25:
            return [value(depth + 1) for _ in range(rnd.randrange(1, 4))]
        if pick < 0.35:
            return rnd.choice([7, 1.5, True, None, 4111111111111111, 5551234567])
        return text()

    detector = PiiDetector(enabled=True, kinds=["email", "phone", "card"], action="mask")
    m = masker(PiiRule(path="traits.email", action="hash"), detector=detector)
    for _ in range(3000):
        roots = {
            r: {f"f{i}{key()}": value(0) for i in range(rnd.randrange(0, 4))}
            for r in ("properties", "traits", "context", "integrations")
        }
        if rnd.random() < 0.3:
            roots["traits"]["email"] = text()
        texts = {r: orjson.dumps(v).decode() for r, v in roots.items()}
        walked, screened = doc(**copy.deepcopy(roots)), doc(**copy.deepcopy(roots))
        assert m.apply(screened, texts) == m.apply(walked), texts
        assert screened == walked, texts


STAND_IN = re.compile(r"^redacted_(email|phone|card)_[0-9a-f]{8}$")


def test_keys_holding_pii_are_renamed_at_every_level_of_every_root():
    m = masker()  # no rule, no detector: names are screened anyway (pii.names is on by default)
    d = doc(
        properties={
            "jo@x.org": True,
            "cart": {"+1 415 555 2671": 2, "ok": 1},
            "items": [{"4111 1111 1111 1111": "x"}],
        },
        traits={"+1\u00a0415\u00a0555\u00a02671": "nbsp"},
        context={"campaign": {"jo@x.org": "c"}},
        integrations={"Custom": {"4111-1111-1111-1111": {"enabled": True}}},
        extra={"jo\uff20x.org": 1},
    )
    entries, hashed = m.apply(d)
    email = redacted_name("jo@x.org", "email", KEY)
    phone = redacted_name("+1 415 555 2671", "phone", KEY)
    card = redacted_name("4111 1111 1111 1111", "card", KEY)
    assert d["properties"] == {email: True, "cart": {phone: 2, "ok": 1}, "items": [{card: "x"}]}
    assert list(d["properties"]) == [email, "cart", "items"]  # order kept
    assert STAND_IN.match(next(iter(d["traits"])))
    assert d["context"] == {"campaign": {email: "c"}}
    assert STAND_IN.match(next(iter(d["integrations"]["Custom"])))
    assert STAND_IN.match(next(iter(d["extra"])))
    assert f"properties.{email}:redact_name" in entries
    assert f"properties.cart.{phone}:redact_name" in entries
    assert f"properties.items.0.{card}:redact_name" in entries
    assert len(entries) == 7 and not hashed
    blob = orjson.dumps([d, entries]).decode()
    for secret in ("jo@x.org", "jo\uff20x.org", "415", "4111"):
        assert secret not in blob


def test_a_stand_in_is_stable_distinct_and_keyed():
    assert redacted_name("jo@x.org", "email", KEY) == redacted_name("jo@x.org", "email", KEY)
    assert redacted_name("jo@x.org", "email", KEY) != redacted_name("Jo@x.org", "email", KEY)
    keyed = hmac.new(KEY, b"jo@x.org", hashlib.sha256).hexdigest()[:8]
    assert redacted_name("jo@x.org", "email", KEY) == f"redacted_email_{keyed}"
    plain = hashlib.sha256(b"jo@x.org").hexdigest()[:8]
    assert redacted_name("jo@x.org", "email", None) == f"redacted_email_{plain}"
    # the same key in another event, or another worker with the same key: the same column
    d1, d2 = doc(properties={"jo@x.org": 1}), doc(properties={"jo@x.org": 2})
    masker().apply(d1)
    masker().apply(d2)
    assert list(d1["properties"]) == list(d2["properties"])
    unkeyed = Masker(PiiRules(), None, "v1")
    d3 = doc(properties={"jo@x.org": 1})
    unkeyed.apply(d3)
    assert list(d3["properties"]) == [f"redacted_email_{plain}"]


def test_the_value_under_a_renamed_key_is_handled_by_rules_and_detector_under_its_new_path():
    m = masker(
        PiiRule(path="properties.*.phone", action="mask", keep="last4"),
        detector=PiiDetector(enabled=True, kinds=["email", "phone", "card"], action="mask"),
    )
    d = doc(properties={"jo@x.org": {"phone": "555-123-9876", "note": "mail jo@x.org"}})
    entries, _ = m.apply(d)
    email = redacted_name("jo@x.org", "email", KEY)
    assert d["properties"] == {email: {"phone": "***9876", "note": "mail ***@x.org"}}
    assert entries == [
        f"properties.{email}:redact_name",
        f"properties.{email}.phone:mask",
        f"properties.{email}.note:mask",
    ]


def test_names_screening_can_be_turned_off_or_narrowed():
    off = Masker(PiiRules(names=PiiNames(enabled=False)), KEY, "v1")
    d = doc(properties={"jo@x.org": 1})
    assert off.apply(d) == ([], False)
    assert d["properties"] == {"jo@x.org": 1}
    record = {"event": "jo@x.org"}
    assert off.mask_names(record) == [] and record["event"] == "jo@x.org"
    emails_only = Masker(PiiRules(names=PiiNames(kinds=["email"])), KEY, "v1")
    d = doc(properties={"jo@x.org": 1, "4111 1111 1111 1111": 2})
    emails_only.apply(d)
    assert "4111 1111 1111 1111" in d["properties"] and "jo@x.org" not in d["properties"]


def test_event_page_names_and_categories_holding_pii_are_replaced():
    m = masker()
    record = {
        "event": "Called +1 415 555 2671",
        "name": "Profile of jo@x.org",
        "category": "\uff14\uff11\uff11\uff11" + "\uff11" * 12,
        "userId": "jo@x.org",  # an identifier, not a name: left to the identity rules
    }
    assert m.mask_names(record) == [
        "event:redact_name",
        "name:redact_name",
        "category:redact_name",
    ]
    assert record["event"] == redacted_name("Called +1 415 555 2671", "phone", KEY)
    assert STAND_IN.match(record["name"]) and record["name"].startswith("redacted_email_")
    assert record["category"].startswith("redacted_card_")
    clean = {"event": "Order Completed", "name": "Home", "category": None}
    assert m.mask_names(clean) == [] and clean["event"] == "Order Completed"


def test_the_detector_and_the_rules_cover_integrations():
    m = masker(
        PiiRule(path="integrations.Custom.apiToken", action="drop"),
        detector=PiiDetector(enabled=True, kinds=["email", "phone", "card"], action="mask"),
    )
    integrations = {
        "Custom": {"apiToken": "t-123", "card": "4111 1111 1111 1111"},
        "Mail": {"to": ["jo@x.org"]},
    }
    texts = {"integrations": orjson.dumps(integrations).decode()}
    for given in (texts, None):  # with the roots' texts (the document prescreen) and without
        d = doc(integrations=copy.deepcopy(integrations))
        entries, _ = m.apply(d, given)
        assert d["integrations"] == {"Custom": {"card": "***1111"}, "Mail": {"to": ["***@x.org"]}}
        assert set(entries) == {
            "integrations.Custom.apiToken:drop",
            "integrations.Custom.card:mask",
            "integrations.Mail.to.0:mask",
        }


def test_values_with_unicode_spaces_and_digits_are_masked():
    m = masker(detector=PiiDetector(enabled=True, kinds=["email", "phone", "card"], action="mask"))
    d = doc(
        properties={
            "a": "call +1\u00a0415\u00a0555\u00a02671",
            "b": "\uff0b\uff11 \uff14\uff11\uff15 \uff15\uff15\uff15 \uff12\uff16\uff17\uff11",
            "c": "jo\uff20x.org",
        }
    )
    texts = {"properties": orjson.dumps(d["properties"]).decode()}
    entries, _ = m.apply(d, texts)
    assert d["properties"]["a"] == "call ***2671"
    assert d["properties"]["b"] == "***\uff12\uff16\uff17\uff11"
    assert d["properties"]["c"] == "***"  # no ASCII @: nothing of it kept
    assert len(entries) == 3


def test_rules_below_a_root_that_an_earlier_rule_dropped_whole_find_nothing():
    """A rule may drop a whole root (``properties``); the rules after it on the same root,
    wildcards included, find nothing instead of failing (the event would go to the DLQ)."""
    m = masker(
        PiiRule(path="properties", action="drop"),
        PiiRule(path="properties.*.name", action="hash"),
        PiiRule(path="properties.*", action="mask"),
        PiiRule(path="properties.a.b", action="drop"),
    )
    d = doc(properties={"a": {"name": "Jo", "b": 1}, "x": "y"})
    entries, hashed = m.apply(d)
    assert "properties" not in d
    assert entries == ["properties:drop"]
    assert not hashed
