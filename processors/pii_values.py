"""What the PII rules do to one value: hash, mask, truncate an IP, or stand in for a name.

Pure functions, no I/O; :class:`~processors.masking.Masker` applies them to the fields the rules
and the detector pick.

- hash: HMAC-SHA256 with a secret key, hex. Strings are normalised first (surrounding and
  repeated whitespace removed, lower case) so ``" Jo@X.com"`` and ``"jo@x.com"`` hash alike and
  joins across tables still work; without the key a dictionary attack is useless.
- mask: replace by ``***`` keeping a configured part: ``domain`` (``***@example.com``),
  ``last4`` (``***4567``), ``first1`` (``j***``) or ``none``.
- truncate: IPv4 addresses to their /24, IPv6 to their /48; None for a value that is not an IP
  address (it cannot be truncated safely: the masker drops it).
- a name holding PII becomes ``redacted_<kind>_<8 hex>`` (:func:`redacted_name`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from typing import Any

import orjson

MASK = "***"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$")
_BLOCK = 64  # SHA-256 block size
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def normalise(value: Any) -> str:
    """The text hashed for a value: strings trimmed, whitespace collapsed, lower-cased."""
    if isinstance(value, str):
        return " ".join(value.split()).lower()
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def hash_value(value: Any, key: bytes) -> str:
    """HMAC-SHA256 of the normalised value, as 64 hex characters."""
    return hmac.digest(key, normalise(value).encode(), "sha256").hex()


class Hasher:
    """:func:`hash_value` with the key's HMAC pads hashed once (RFC 2104, as ``hmac`` does):
    each value then costs two SHA-256 copies and updates, not a new HMAC context."""

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def __call__(self, value: Any) -> str:
        inner = self._inner.copy()
        inner.update(normalise(value).encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


def redacted_name(name: str, kind: str, key: bytes | None) -> str:
    """The name standing for `name`, which holds PII of `kind`: ``redacted_<kind>_<8 hex>``.

    The hex is the start of HMAC-SHA256(key, name) when a key is set, else of SHA-256(name).
    The same name always gets the same stand-in, a valid snake_case column or table name, so a
    renamed property keeps one column; two different names get different ones (the name is
    hashed as it is, not normalised: keys differing in case must not collide in one object).
    With the key, the 32 bits reveal nothing to anyone without it; with a plain SHA-256 someone
    holding a list of candidate emails or numbers could confirm which one a name was, so set
    ``SEGFLOW_PROCESS_PII_HMAC_KEY`` (rotating it renames these columns)."""
    data = name.encode("utf-8", "surrogatepass")
    digest = hmac.digest(key, data, "sha256") if key else hashlib.sha256(data).digest()
    return f"redacted_{kind}_{digest[:4].hex()}"


def mask_value(value: Any, keep: str) -> str:
    """``***`` plus the part `keep` names: domain, last4, first1 or none."""
    text = value if isinstance(value, str) else str(value)
    text = text.strip()
    if keep == "domain":
        if "@" in text:
            return MASK + "@" + text.rsplit("@", 1)[1].lower()
        return MASK
    if keep == "last4":
        alnum = [c for c in text if c.isalnum()]
        return MASK + "".join(alnum[-4:]) if len(alnum) > 4 else MASK
    if keep == "first1":
        return text[:1] + MASK if len(text) > 1 else MASK
    return MASK


def truncate_ip(value: Any) -> str | None:
    """IPv4 to its /24 network address, IPv6 to its /48; None when `value` is no IP address."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _IPV4.match(text):
        a, b, c, _ = text.split(".")
        return f"{a}.{b}.{c}.0"
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)
