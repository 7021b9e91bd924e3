"""The PII detector: emails, phones, Luhn-checked card numbers, and what it must not flag."""

from __future__ import annotations

import orjson
import pytest

from processors.detector import (
    CARD,
    EMAIL,
    PHONE,
    document_may_hold_pii,
    find_pii,
    fold,
    luhn_valid,
    may_hold_pii,
)

ALL = [EMAIL, PHONE, CARD]


def kinds(text: str) -> list[str]:
    return [f.kind for f in find_pii(text, ALL)]


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")


@pytest.mark.parametrize(
    "text",
    ["jo@example.com", "Mail: First.Last+tag@sub.example.co.uk!", "a@b.io"],
)
def test_emails(text):
    assert kinds(text) == [EMAIL]


@pytest.mark.parametrize(
    "text",
    ["4111 1111 1111 1111", "4111-1111-1111-1111", "card 5500005555555559 ok", "378282246310005"],
)
def test_cards_pass_luhn(text):
    assert kinds(text) == [CARD]


def test_card_failing_luhn_is_not_a_card():
    assert CARD not in kinds("4111 1111 1111 1112")


@pytest.mark.parametrize(
    "text",
    ["+1 415 555 2671", "+442079460958", "(555) 123-4567", "555-123-4567", "0171 2345678"],
)
def test_phones(text):
    assert kinds(text) == [PHONE]


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-31T10:00:00Z",
        "2024-01-31 10:00:00",
        "1700000000000",
        "123e4567-e89b-12d3-a456-426614174000",
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36",
        "order 12345",
        "v1.2.3",
        "",
    ],
)
def test_no_false_positives_on_common_values(text):
    assert kinds(text) == []


def test_only_requested_kinds_and_spans():
    text = "jo@x.io +1 415 555 2671"
    assert kinds(text) == [EMAIL, PHONE]
    found = find_pii(text, [PHONE])
    assert [(f.kind, text[f.start : f.end]) for f in found] == [(PHONE, "+1 415 555 2671")]


@pytest.mark.parametrize(
    "text",
    [
        "+1\u00a0415\u00a0555\u00a02671",  # no-break spaces
        "+1\u202f415\u202f555\u202f2671",  # narrow no-break spaces
        "(555)\u2009123\u20114567",  # thin space, non-breaking hyphen
        "\uff0b\uff11 \uff14\uff11\uff15 \uff15\uff15\uff15 \uff12\uff16\uff17\uff11",  # full-width
        "\u0665\u0665\u0665-\u0661\u0662\u0663-\u0664\u0665\u0666\u0667",  # Arabic-Indic digits
        "\u096b\u096b\u096b \u0967\u0968\u0969 \u096a\u096b\u096c\u096d",  # Devanagari digits
    ],
)
def test_phones_written_with_unicode_spaces_and_digits(text):
    found = find_pii(f"call {text} now", ALL)
    assert [(f.kind, f"call {text} now"[f.start : f.end]) for f in found] == [(PHONE, text)]
    assert may_hold_pii(text)
    assert document_may_hold_pii(orjson.dumps({"note": f"call {text}"}).decode(), [PHONE])


@pytest.mark.parametrize(
    "text",
    ["4111\u00a01111\u00a01111\u00a01111", "\uff14\uff11\uff11\uff11" + "\uff11" * 12],
)
def test_cards_written_with_unicode_spaces_and_digits(text):
    assert kinds(text) == [CARD]


@pytest.mark.parametrize("text", ["jo\uff20example.com", "\uff4a\uff4f\uff20x.io"])
def test_emails_with_a_full_width_at_sign(text):
    assert kinds(f"mail {text}") == [EMAIL]
    assert document_may_hold_pii(orjson.dumps({"m": text}).decode(), [EMAIL])


def test_fold_keeps_one_character_for_one():
    text = "caf\u00e9 \uff0b\uff11\u00a0\u0661 \u65e5\u672c \u2212"
    assert fold(text) == "caf\u00e9 +1 1 \u65e5\u672c -"
    assert fold("plain ascii") == "plain ascii"
    assert fold("caf\u00e9 \u65e5\u672c") == "caf\u00e9 \u65e5\u672c"  # nothing to fold
