"""Segment's Webhooks destination: one event per POST, optionally signed.

With a shared secret set, Segment sends ``X-Signature``: the hex HMAC-SHA1 of the request body
keyed with the secret. The edge recomputes it over the exact bytes received and compares in
constant time; a missing or wrong signature is a 401.
"""

from __future__ import annotations

import hashlib
import hmac

from ingest.rejections import Rejection


def signature(secret: bytes, body: bytes) -> str:
    """The X-Signature Segment sends for `body`."""
    return hmac.new(secret, body, hashlib.sha1).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> None:
    """Raise a 401 Rejection unless `header` is the body's signature."""
    if not header:
        raise Rejection(401, "missing_signature", "X-Signature header required by this edge")
    given = header.strip().lower().removeprefix("sha1=")
    if not hmac.compare_digest(given.encode(), signature(secret, body).encode()):
        raise Rejection(401, "bad_signature", "X-Signature does not match the body")
