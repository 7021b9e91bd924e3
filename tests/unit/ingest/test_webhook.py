"""X-Signature: hex HMAC-SHA1 of the body with the shared secret, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ingest.rejections import Rejection
from ingest.webhook import signature, verify_signature

BODY = b'{"type":"track","userId":"u","event":"e"}'


def test_signature_is_hex_hmac_sha1() -> None:
    assert signature(b"s3cret", BODY) == hmac.new(b"s3cret", BODY, hashlib.sha1).hexdigest()


def test_a_good_signature_passes_in_any_case_and_with_a_prefix() -> None:
    good = signature(b"s3cret", BODY)
    verify_signature(b"s3cret", BODY, good)
    verify_signature(b"s3cret", BODY, good.upper())
    verify_signature(b"s3cret", BODY, "sha1=" + good)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        ("00" * 20, "bad_signature"),
        (signature(b"other", BODY), "bad_signature"),
        (signature(b"s3cret", BODY + b" "), "bad_signature"),
    ],
)
def test_bad_or_missing_signatures_are_401(header: str | None, code: str) -> None:
    with pytest.raises(Rejection) as info:
        verify_signature(b"s3cret", BODY, header)
    assert (info.value.status, info.value.code) == (401, code)
