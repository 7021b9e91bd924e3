"""The PII detector: emails, phones, Luhn-checked card numbers, and what it must not flag."""

from __future__ import annotations

import pytest

from processors.detector import CARD, EMAIL, PHONE, find_pii, luhn_valid

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
