"""The settings document analytics.js loads at start, so a page needs no Segment CDN: pure logic.

analytics.js (analytics-next) fetches ``<cdnURL>/v1/projects/<writeKey>/settings`` before it
sends anything, and sends events to ``<protocol>://<integrations["Segment.io"].apiHost>/<path>``.
The edge answers that request itself for the write keys it accepts: ``Segment.io`` points at the
edge, no device-mode destinations, no remote plugins or middleware, and remote metrics off
(``sampleRate`` 0: analytics.js would otherwise post its own telemetry to api.segment.io).

Where the edge is, as browsers reach it: ``SEGFLOW_INGEST_PUBLIC_URL`` when set (recommended:
nothing of the request decides what the document says, so a shared cache cannot be poisoned
with another host). Without it, the request's ``Host`` header, used only when it is a plain
``host[:port]``; the protocol is the request's, or ``X-Forwarded-Proto`` from a trusted proxy.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import urlsplit

# A DNS name or IPv4 address, or a bracketed IPv6 address, and an optional port.
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)
_PATH = re.compile(r"(?:/[A-Za-z0-9._~-]+)*")
SETTINGS_PREFIX = "/v1/projects/"
SETTINGS_SUFFIX = "/settings"


class ApiBase(NamedTuple):
    """Where analytics.js sends events: ``protocol://host`` + ``/v1``."""

    protocol: str  # "http" or "https"
    host: str  # host[:port] and any path prefix, without a trailing slash

    @property
    def api_host(self) -> str:
        return f"{self.host}/v1"


def parse_public_url(url: str) -> ApiBase:
    """``https://events.example.com[:port][/prefix]`` -> ApiBase; ValueError naming the fault."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.netloc or not _HOST.fullmatch(parts.netloc):
        raise ValueError("must name a host (and port), without user or password")
    if parts.query or parts.fragment:
        raise ValueError("must have no query or fragment")
    path = parts.path.rstrip("/")
    if not _PATH.fullmatch(path):
        raise ValueError("path must be plain segments such as /segment")
    return ApiBase(parts.scheme, parts.netloc.lower() + path)


def base_from_request(host_header: str | None, protocol: str) -> ApiBase | None:
    """The edge as the request reached it; None when the Host header is not a plain host."""
    if not host_header:
        return None
    host = host_header.strip()
    if not _HOST.fullmatch(host):
        return None
    return ApiBase("https" if protocol == "https" else "http", host.lower())


def write_key_of(path: str) -> str | None:
    """The write key of a ``/v1/projects/<writeKey>/settings`` path; None for another path."""
    if not (path.startswith(SETTINGS_PREFIX) and path.endswith(SETTINGS_SUFFIX)):
        return None
    key = path[len(SETTINGS_PREFIX) : -len(SETTINGS_SUFFIX)]
    return key if key and "/" not in key else None


def settings_document(write_key: str, base: ApiBase) -> dict[str, Any]:
    """What analytics.js reads from Segment's CDN, pointing at this edge."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": base.api_host,
                "protocol": base.protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
                "versionSettings": {"componentTypes": []},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }
