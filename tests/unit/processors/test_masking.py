"""PII masking: each action, wildcards, precedence, the detector, normalised hashing."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from processors.masking import Hasher, Masker, hash_value, mask_value, normalise, truncate_ip
from runtime.rules import PiiDetector, PiiRule, PiiRules
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


def test_hash_is_hmac_sha256_of_the_normalised_value():
    expected = hmac.new(KEY, b"jo@example.com", hashlib.sha256).hexdigest()
    assert hash_value("  Jo@Example.COM ", KEY) == expected
    assert hash_value("jo@example.com", KEY) == expected
    assert hash_value("jo@example.com", b"other") != expected
    assert normalise("A  b\tC") == "a b c"


@pytest.mark.parametrize("key", [b"", b"short", KEY, b"x" * 64, b"y" * 65, bytes(range(200))])
def test_the_hasher_is_hmac_sha256_for_every_key_length(key):
    hasher = Hasher(key)
    for value in ("  Jo@Example.COM ", "ü-ñ", 12345, {"a": [1, 2]}):
        assert hasher(value) == hash_value(value, key)
        assert hasher(value) == hmac.new(key, normalise(value).encode(), hashlib.sha256).hexdigest()


def test_hash_rule_replaces_value_and_reports_key_use():
    d = doc(traits={"email": "Jo@Example.com", "name": "Jo"})
    entries, hashed = masker(PiiRule(path="traits.email", action="hash")).apply(d)
    assert d["traits"]["email"] == hash_value("jo@example.com", KEY)
    assert d["traits"]["name"] == "Jo"
    assert entries == ["traits.email:hash"]
    assert hashed


@pytest.mark.parametrize(
    ("keep", "value", "expected"),
    [
        ("domain", "Jo@Example.com", "***@example.com"),
        ("domain", "no-at-sign", "***"),
        ("last4", "+1 (555) 123-4567", "***4567"),
        ("last4", "123", "***"),
        ("first1", "Jonathan", "J***"),
        ("none", "secret", "***"),
    ],
)
def test_mask_keeps_the_configured_part(keep, value, expected):
    assert mask_value(value, keep) == expected


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
        ("not an ip", None),
        (12345, None),
    ],
)
def test_truncate_ip(ip, expected):
    assert truncate_ip(ip) == expected


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
    """With the roots' JSON texts given, the detector skips a root whose text as a whole holds
    no finding; on random documents (PII next to ids, dates, IPs, escapes, unicode, nesting)
    that must mask exactly what a walk over every value masks."""
    import copy
    import random

    import orjson

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

    def value(depth: int) -> Any:
        pick = rnd.random()
        if depth < 3 and pick < 0.15:
            return {f"k{i}{text()[:3]}": value(depth + 1) for i in range(rnd.randrange(1, 4))}
        if depth < 3 and pick < 0.25:
            return [value(depth + 1) for _ in range(rnd.randrange(1, 4))]
        if pick < 0.35:
            return rnd.choice([7, 1.5, True, None, 4111111111111111, 5551234567])
        return text()

    detector = PiiDetector(enabled=True, kinds=["email", "phone", "card"], action="mask")
    m = masker(PiiRule(path="traits.email", action="hash"), detector=detector)
    for _ in range(3000):
        roots = {
            r: {f"f{i}": value(0) for i in range(rnd.randrange(0, 4))}
            for r in ("properties", "traits", "context")
        }
        if rnd.random() < 0.3:
            roots["traits"]["email"] = text()
        texts = {r: orjson.dumps(v).decode() for r, v in roots.items()}
        walked, screened = doc(**copy.deepcopy(roots)), doc(**copy.deepcopy(roots))
        assert m.apply(screened, texts) == m.apply(walked), texts
        assert screened == walked, texts
