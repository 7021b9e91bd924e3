"""The health of each running component, from its ``/healthz`` and ``/readyz`` (runtime.health).

`classify` turns the two answers into one state (pure); `probe` asks over HTTP with a timeout.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from observe.deadletters import one_line

# The readiness reason (the body of /readyz) is a short sentence; longer bodies are cut.
DETAIL_CHARS = 120

READY = "ready"
NOT_READY = "not ready"
NOT_LIVE = "not live"
DOWN = "down"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status code (None: no answer) and its body's first line, or the error."""

    status: int | None
    text: str


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    url: str
    state: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.state == READY

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "state": self.state, "detail": self.detail}


def classify(name: str, url: str, healthz: Answer, readyz: Answer) -> ComponentHealth:
    """down: no answer on /healthz; not live: /healthz not 200; not ready: /readyz not 200;
    ready otherwise. The detail is what the component said (or the connection error)."""
    if healthz.status is None:
        return ComponentHealth(name, url, DOWN, healthz.text)
    if healthz.status != 200:
        return ComponentHealth(name, url, NOT_LIVE, f"/healthz {healthz.status}")
    if readyz.status != 200:
        said = readyz.text or ("no answer" if readyz.status is None else "")
        code = "" if readyz.status is None else f"/readyz {readyz.status}: "
        return ComponentHealth(name, url, NOT_READY, one_line(code + said, DETAIL_CHARS))
    return ComponentHealth(name, url, READY, one_line(readyz.text, DETAIL_CHARS))


def get(url: str, timeout_s: float) -> Answer:
    """GET `url`: its status and first body line; status None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return Answer(int(response.status), _first_line(response.read(512)))
    except urllib.error.HTTPError as exc:
        return Answer(int(exc.code), _first_line(exc.read(512) if exc.fp else b""))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Answer(None, one_line(f"no answer: {reason}", DETAIL_CHARS))


def _first_line(body: bytes) -> str:
    lines = body.decode("utf-8", "replace").splitlines()
    return one_line(lines[0], DETAIL_CHARS) if lines else ""


def probe(name: str, url: str, timeout_s: float) -> ComponentHealth:
    """Ask `url`/healthz, then /readyz when it is live."""
    base = url.rstrip("/")
    healthz = get(base + "/healthz", timeout_s)
    readyz = get(base + "/readyz", timeout_s) if healthz.status == 200 else Answer(None, "")
    return classify(name, base, healthz, readyz)
