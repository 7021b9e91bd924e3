"""Write-key authentication as Segment does it: HTTP Basic with the key as user name, or
``writeKey`` in the body. Each write key maps to one source (rules file: sources[].write_keys).
"""

from __future__ import annotations

import base64
import binascii

from ingest.rejections import Rejection
from runtime.rules import Rules, SourceRule


def key_from_authorization(header: str | None) -> str | None:
    """The write key of an ``Authorization: Basic base64(key:)`` header (colon optional)."""
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Rejection(
            401, "malformed_authorization", "Authorization is not Basic base64"
        ) from exc
    key = decoded.split(":", 1)[0]
    return key or None


class WriteKeys:
    """Write key -> source, from the rules file."""

    def __init__(self, rules: Rules) -> None:
        self._sources = rules.source_for_key()

    def source(self, header_key: str | None, body_key: object) -> SourceRule:
        """The source of a request: the header's key first, else the body's; 401 otherwise."""
        key = header_key if header_key is not None else body_key
        if key is None or key == "":
            raise Rejection(
                401,
                "missing_write_key",
                "no write key: send it as the Basic auth user name or as writeKey in the body",
            )
        if type(key) is not str:
            raise Rejection(401, "unknown_write_key", "writeKey must be a string")
        source = self._sources.get(key)
        if source is None:
            raise Rejection(401, "unknown_write_key", "the write key is not known to this edge")
        return source

    def known(self, key: str) -> SourceRule | None:
        """The source of `key`; None when the edge does not accept it."""
        return self._sources.get(key)

    def by_name(self, name: str) -> SourceRule | None:
        return next((s for s in self._sources.values() if s.name == name), None)
