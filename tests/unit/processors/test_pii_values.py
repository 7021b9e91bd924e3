"""What the PII actions do to one value: normalised HMAC hashing, masks, IP truncation."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from processors.pii_values import Hasher, hash_value, mask_value, normalise, truncate_ip

KEY = b"k" * 32


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
