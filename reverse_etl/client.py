"""POST /v1/batch to a Segment-compatible API: Basic auth with the write key, gzip, retries.

429, 408 and 5xx answers and connection failures are retried with exponential back-off and
jitter; a ``Retry-After`` header (seconds or an HTTP date) is honoured when it asks for longer.
Any other 4xx is fatal: the write key or the calls are wrong, and resending cannot fix it.
"""

from __future__ import annotations

import base64
import gzip
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from schemas.errors import FatalError, RetryableError

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 0.5
    max_s: float = 60.0
    max_attempts: int = 8

    def delay(self, attempt: int, retry_after_s: float | None, rand: float) -> float:
        """Wait before retry number `attempt` (1-based): full-jitter back-off, at least
        Retry-After."""
        ceiling = min(self.max_s, self.initial_s * (2 ** (attempt - 1)))
        wait = ceiling * (0.5 + rand / 2)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_s))
        return wait


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None when absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class ApiError(FatalError):
    """The API refused a request for a reason resending cannot fix."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"the Segment API answered {status}: {detail}")
        self.status = status


@dataclass(frozen=True)
class Response:
    status: int
    retry_after: str | None
    body: bytes


Transport = Callable[[str, bytes, dict[str, str], float], Response]


def urllib_transport(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
    """One POST with the standard library; HTTP errors become responses, network errors raise."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Response(answer.status, answer.headers.get("Retry-After"), answer.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.headers.get("Retry-After"), exc.read() or b"")


class SegmentApiClient:
    """Sends batch bodies; returns once one was accepted, raises when it never will be."""

    def __init__(
        self,
        api_host: str,
        write_key: str,
        *,
        gzip_bodies: bool = True,
        timeout_s: float = 30.0,
        policy: RetryPolicy | None = None,
        transport: Transport = urllib_transport,
        sleep: Callable[[float], None] = time.sleep,
        on_response: Callable[[str], None] | None = None,
    ) -> None:
        self.url = api_host.rstrip("/") + "/v1/batch"
        token = base64.b64encode(f"{write_key}:".encode()).decode()
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "User-Agent": "segflow-reverse-etl/1",
        }
        if gzip_bodies:
            self._headers["Content-Encoding"] = "gzip"
        self._gzip = gzip_bodies
        self._timeout_s = timeout_s
        self._policy = policy or RetryPolicy()
        self._transport = transport
        self._sleep = sleep
        self._on_response = on_response or (lambda _outcome: None)
        self.retries = 0

    def send(self, body: bytes) -> None:
        data = gzip.compress(body, compresslevel=5) if self._gzip else body
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                answer = self._transport(self.url, data, self._headers, self._timeout_s)
            except OSError as exc:  # refused, reset, timed out, DNS
                problem = f"{type(exc).__name__}: {exc}"
                self._on_response("network_error")
            else:
                self._on_response(str(answer.status))
                if 200 <= answer.status < 300:
                    return
                detail = answer.body[:300].decode("utf-8", "replace")
                if answer.status not in RETRY_STATUSES:
                    raise ApiError(answer.status, detail)
                problem = f"HTTP {answer.status}"
                retry_after = retry_after_seconds(answer.retry_after)
            attempt += 1
            if attempt > self._policy.max_attempts:
                raise RetryableError(
                    f"{self.url} still failing after {self._policy.max_attempts} retries "
                    f"({problem}); the next sync resends what was not accepted"
                )
            wait = self._policy.delay(attempt, retry_after, random.random())
            self.retries += 1
            logger.warning("POST %s: %s; retry %d in %.1fs", self.url, problem, attempt, wait)
            self._sleep(wait)
