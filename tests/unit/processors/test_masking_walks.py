"""The masker's C screens (processors/_prescreen.c: ``candidates``, ``keys_may_hold``) against the
Python walks of every value and key they stand in for.

The detector and the name screen start from the values and keys the C screens return; the
Python walks look at everything. On generated hostile documents, with rules that keep, drop,
hash and mask fields (containers too) and each detector action, both must give the same
document, the same ``path:action`` entries in the same order and the same hashed flag.
"""

from __future__ import annotations

import copy
import sys

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors import masking
from processors.masking import DOCUMENT_ROOTS, Masker
from runtime.rules import PiiDetector, PiiNames, PiiRule, PiiRules

PIECES = [
    "jo@example.com",
    "+49 170 1234567",
    "4111 1111 1111 1111",
    "1234567",  # 7 digits: no phone
    "12345678",
    "2024-01-02",
    "ord-996488968741",
    "203.0.113.7",
    "jo\uff20example.com",  # a full-width at sign
    "\uff14\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11",
    "+49\u00a0170\u20131234567",
    "plain",
]
TEXTS = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text("0123456789 -@.aé\uff10", max_size=10)),
    max_size=3,
).map("".join)
KEYS = st.one_of(st.sampled_from(["email", "phone", "items", "note", "ip", "card_number"]), TEXTS)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), TEXTS),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=14,
)
DOCS = st.fixed_dictionaries(
    {root: st.dictionaries(KEYS, JSON, max_size=5) for root in DOCUMENT_ROOTS}
)
RULES = [
    PiiRule(path="traits.email", action="hash"),
    PiiRule(path="properties.items", action="keep"),  # a container the detector leaves alone
    PiiRule(path="properties.*.phone", action="mask", keep="last4"),
    PiiRule(path="properties.items.*.email", action="hash"),
    PiiRule(path="context.note", action="drop"),
    PiiRule(path="context.ip", action="truncate"),
    PiiRule(path="extra.*", action="keep"),
]


def maskers(action: str, names: bool) -> tuple[Masker, Masker]:
    pii = PiiRules(
        rules=RULES,
        detector=PiiDetector(enabled=True, action=action),
        names=PiiNames(enabled=names),
    )
    screened, walked = Masker(pii, b"key", "v1"), Masker(pii, b"key", "v1")
    walked.native_walk = False
    return screened, walked


def test_the_c_screens_are_built():
    """`make venv` compiles them; without them the masker runs the Python walks only."""
    assert masking._candidates is not None, "processors/_prescreen.c was not built: make venv"
    assert masking._keys_may_hold is not None


@settings(max_examples=400, deadline=None)
@given(DOCS, st.sampled_from(["mask", "hash", "drop"]), st.booleans(), st.booleans())
def test_the_screened_walks_mask_as_the_full_walks_do(doc, action, names, with_texts):
    screened, walked = maskers(action, names)
    texts = {root: orjson.dumps(value).decode() for root, value in doc.items()}
    a, b = copy.deepcopy(doc), copy.deepcopy(doc)
    given_texts = texts if with_texts else None
    assert screened.apply(a, given_texts) == walked.apply(b, given_texts)
    assert orjson.dumps(a) == orjson.dumps(b)


def test_candidates_are_the_values_that_may_hold_pii_in_walk_order():
    doc = {
        "a": "x@y",
        "b": [1, "12345678", {"c": "é", "d": "short", "e": "1234567"}],
        "f": {},
        "g": "tel 123 456 78",
        "h": [],
        "i": {"j": ["k@l"]},
    }
    found = masking._candidates(doc, ("properties",))
    assert [(path, parent[key]) for parent, key, path in found] == [
        (("properties", "a"), "x@y"),
        (("properties", "b", 1), "12345678"),
        (("properties", "b", 2, "c"), "é"),  # non-ASCII: look-alikes decided in Python
        (("properties", "g"), "tel 123 456 78"),
        (("properties", "i", "j", 0), "k@l"),
    ]
    assert found[1][0] is doc["b"] and found[1][1] == 1  # the container and its index


def test_keys_may_hold_looks_at_keys_at_every_depth():
    keys_may_hold = masking._keys_may_hold
    assert not keys_may_hold({"plain": "jo@example.com", "n": [{"x": 1}], "e": {}})  # values only
    assert keys_may_hold({"plain": [{"jo@example.com": 1}]})
    assert keys_may_hold({"a": {"b": {"ord 12345678": 1}}})
    assert keys_may_hold({"\uff14\uff11": 1})  # non-ASCII: decided in Python
    assert not keys_may_hold({"1234567": 1})
    assert keys_may_hold([{"x@y": 1}])


def test_the_c_screens_refuse_what_they_cannot_walk():
    with pytest.raises(TypeError):
        masking._candidates("text", ("properties",))
    with pytest.raises(TypeError):
        masking._candidates({}, ["properties"])
    with pytest.raises(TypeError):
        masking._keys_may_hold("text")
    deep: list[object] = []
    node = deep
    for _ in range(sys.getrecursionlimit() + 100):
        inner: list[object] = []
        node.append(inner)
        node = inner
    with pytest.raises(RecursionError):
        masking._candidates(deep, ())
    with pytest.raises(RecursionError):
        masking._keys_may_hold(deep)


def test_findings_dropped_from_a_list_leave_the_other_elements():
    doc = {
        "properties": {"notes": ["jo@example.com", "keep me", "+49 170 1234567", "ok", "x@y.io"]},
        "traits": {},
    }
    screened, walked = maskers("drop", names=False)
    a, b = copy.deepcopy(doc), copy.deepcopy(doc)
    entries = ["properties.notes.0:drop", "properties.notes.2:drop", "properties.notes.4:drop"]
    assert screened.apply(a) == (entries, False)
    assert walked.apply(b) == (entries, False)
    assert a == b == {"properties": {"notes": ["keep me", "ok"]}, "traits": {}}
