"""A small HTTP server for /metrics, /healthz and /readyz, run in a daemon thread.

Components that serve HTTP themselves (the edge) mount the same handlers; the others start this.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)


class HealthState:
    """What /healthz and /readyz report: `live` false = restart me, `ready` false = no traffic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.live = True
        self.ready = False
        self.reason = "starting"
        self.checks: dict[str, Callable[[], bool]] = {}

    def set_ready(self, ready: bool, reason: str = "") -> None:
        with self._lock:
            self.ready, self.reason = ready, reason or ("ready" if ready else "not ready")

    def set_live(self, live: bool, reason: str = "") -> None:
        with self._lock:
            self.live = live
            if reason:
                self.reason = reason

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            ready, reason = self.ready, self.reason
        for name, check in self.checks.items():
            try:
                ok = check()
            except Exception:  # a failing check is a not-ready answer, not a crash
                ok = False
            if not ok:
                return False, f"check {name} failing"
        return ready, reason


def render(path: str, registry: CollectorRegistry, state: HealthState) -> tuple[int, str, bytes]:
    """(status, content type, body) for one of the three paths; 404 otherwise."""
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
    if path == "/healthz":
        ok = state.live
        return (200 if ok else 503), "text/plain", (b"ok\n" if ok else b"unhealthy\n")
    if path == "/readyz":
        ready, reason = state.readiness()
        return (200 if ready else 503), "text/plain", (reason + "\n").encode()
    return 404, "text/plain", b"not found\n"


class HealthServer:
    """Serves the three paths on host:port until stopped."""

    def __init__(
        self, registry: CollectorRegistry, state: HealthState, host: str, port: int
    ) -> None:
        registry_, state_ = registry, state

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, ctype, body = render(self.path.split("?", 1)[0], registry_, state_)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        logger.info("metrics and health on port %s", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
