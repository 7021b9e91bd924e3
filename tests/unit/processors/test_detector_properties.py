"""The detector's fast paths against their plain definitions, on generated hostile documents.

The document prescreen must never say "nothing here" for a document a walk of every key and
string value with :func:`find_pii` finds something in, however the JSON text is written (escaped
characters, look-alike digits and spaces, nested arrays, PII in keys); and the masker must give
the same document and entries with the prescreen as with a walk of every root.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.detector import (
    CARD,
    EMAIL,
    PHONE,
    _ascii_runs_verdict,
    _ascii_runs_verdict_py,
    _digit_runs,
    _finds_number,
    _prescreen,
    _regex_runs,
    document_may_hold_pii,
    find_pii,
    fold,
)
from processors.masking import DOCUMENT_ROOTS, Masker
from runtime.rules import load_rules

ALL = (CARD, EMAIL, PHONE)
PIECES = [
    "+49 170 1234567",
    "(555) 123-4567",
    "555-123-4567",
    "0171 2345678",
    "0123/456789",
    "4111 1111 1111 1111",
    "4111111111111111",
    "jo@example.com",
    "1700000000",
    "2024-01-02",
    "ord-996488968741",
    "203.0.113.7",
    "\uff14\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11",
    "\u0664\u0661\u0661\u0661111111111111",
    "+49\u00a0170\u20131234567",
    "jo\uff20example.com",
]
ALPHABET = '0123456789 \t().+/-@.:_aZé\n"\\\u00a0\u2013\uff10\uff15\u0663'
TEXTS = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(ALPHABET, max_size=12)), max_size=4
).map("".join)
JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        TEXTS,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXTS, inner, max_size=4)),
    max_leaves=12,
)
DOCS = st.dictionaries(TEXTS, JSON, max_size=5)
KINDS = st.sampled_from([ALL, (EMAIL,), (PHONE,), (CARD,), (CARD, PHONE)])


def writings(doc: dict[str, Any]) -> list[str]:
    """The ways a producer may write `doc`: compact UTF-8, every non-ASCII character and
    ``/`` escaped, and every character escaped."""
    plain = orjson.dumps(doc).decode()
    ascii_ = json.dumps(doc, ensure_ascii=True).replace("/", "\\/")
    every = "".join(
        f"\\u{ord(c):04x}" if c.isalnum() or c in "@+-/ " else c for c in plain
    )  # inside strings only matters; outside, the text is then no JSON (not generated)
    out = [plain, ascii_]
    try:
        if orjson.loads(every) == orjson.loads(plain):
            out.append(every)
    except orjson.JSONDecodeError:
        pass
    return out


def walk_finds(value: Any, kinds: tuple[str, ...]) -> bool:
    if type(value) is str:
        return bool(find_pii(value, kinds))
    if type(value) is dict:
        return any(bool(find_pii(k, kinds)) or walk_finds(v, kinds) for k, v in value.items())
    if type(value) is list:
        return any(walk_finds(v, kinds) for v in value)
    return False


@settings(max_examples=400, deadline=None)
@given(DOCS, KINDS)
def test_prescreen_never_misses_what_a_walk_finds(doc, kinds):
    if walk_finds(doc, kinds):
        for text in writings(doc):
            assert document_may_hold_pii(text, kinds), text


@settings(max_examples=400, deadline=None)
@given(st.text('0123456789 \t().+/-"ax:,{}[]', max_size=60))
def test_run_scan_matches_the_regex_widening(text):
    assert _digit_runs(text) == _regex_runs(text)


@settings(max_examples=400, deadline=None)
@given(TEXTS, KINDS)
def test_run_verdict_is_find_pii(text, kinds):
    folded = fold(text)  # the prescreen hands it runs of the folded document
    if "@" not in folded:
        assert _finds_number(folded, kinds) == bool(find_pii(text, kinds))


def masker() -> Masker:
    return Masker(load_rules(None).pii, b"key", "v1")


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({root: DOCS for root in DOCUMENT_ROOTS}))
def test_masking_with_the_prescreen_equals_walking_every_root(doc):
    m = masker()
    for text_of in (lambda d: orjson.dumps(d).decode(), lambda d: json.dumps(d)):
        texts = {root: text_of(value) for root, value in doc.items()}
        screened, walked = copy.deepcopy(doc), copy.deepcopy(doc)
        assert m.apply(screened, texts) == m.apply(walked, None)
        assert orjson.dumps(screened) == orjson.dumps(walked)


def test_escaped_characters_do_not_hide_a_finding():
    for text in (
        r'{"note":"jo\u0040example.com"}',  # an escaped at sign
        r'{"note":"\u0034\u0031\u0031\u0031111111111111"}',  # escaped digits
        r'{"note":"0123\/456789"}',  # an escaped slash joining a national number
        r'{"jo\u0040example.com":1}',  # in a key
    ):
        assert document_may_hold_pii(text, ALL), text


@settings(max_examples=600, deadline=None)
@given(st.text('0123456789 \t().+/-"ax_:,{}[]', max_size=80), KINDS)
def test_remembered_run_verdicts_are_the_runs_verdicts(text, kinds):
    # twice: the second answer comes from the verdicts remembered by shape and by run
    expected = any(_finds_number(text[max(s - 1, 0) : e + 1], kinds) for s, e in _regex_runs(text))
    assert _ascii_runs_verdict(text, kinds) == expected
    assert _ascii_runs_verdict(text, kinds) == expected
    assert _ascii_runs_verdict_py(text, kinds) == expected  # the fallback without the C scan


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["4111111111111111", "4111111111111112", "0171 2345678", "12345678"])
    ).map(" x ".join),
    KINDS,
)
def test_runs_of_one_shape_keep_their_own_verdicts(text, kinds):
    expected = any(_finds_number(text[max(s - 1, 0) : e + 1], kinds) for s, e in _regex_runs(text))
    assert _ascii_runs_verdict(text, kinds) == expected
    assert _ascii_runs_verdict_py(text, kinds) == expected


def test_the_c_run_scan_is_built_and_refuses_what_it_cannot_scan():
    """`make venv` compiles processors/_prescreen.c; it takes ASCII text only (the detector
    folds and checks first) and a run longer than its stack buffer is scanned too."""
    assert _prescreen is not None, "processors/_prescreen.c was not built: run make venv"
    with pytest.raises(TypeError):
        _prescreen.runs_verdict("é 12345678", ALL, {}, {}, object(), lambda *a: False)
    long_run = "x " + "1234 " * 200 + "4111 1111 1111 1111" + " y"
    assert _ascii_runs_verdict(long_run, ALL) == _ascii_runs_verdict_py(long_run, ALL)
    seen = []

    def miss(text, lo, hi, shape, kinds):
        seen.append((lo, hi, shape))
        return False

    assert not _prescreen.runs_verdict("ab 0171 2345678, 2024-01-02", ALL, {}, {}, None, miss)
    # each maximal run with the character on either side, shaped: 1-9 as 1, a word character
    # as a, any other as '"'
    assert seen == [(1, 16, b'a 0111 1111111"'), (15, 27, b'" 1011-01-01')]
