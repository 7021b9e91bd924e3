"""Health classification from /healthz and /readyz, and the probe against a real local server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from observe.components import DOWN, NOT_LIVE, NOT_READY, READY, Answer, classify, probe
from runtime.health import HealthServer, HealthState


@pytest.mark.parametrize(
    ("healthz", "readyz", "state", "detail"),
    [
        (Answer(200, "ok"), Answer(200, "ready"), READY, "ready"),
        (
            Answer(200, "ok"),
            Answer(503, "check suppressions failing"),
            NOT_READY,
            "/readyz 503: check suppressions failing",
        ),
        (Answer(200, "ok"), Answer(None, ""), NOT_READY, "no answer"),
        (Answer(503, "unhealthy"), Answer(None, ""), NOT_LIVE, "/healthz 503"),
        (Answer(None, "no answer: refused"), Answer(None, ""), DOWN, "no answer: refused"),
    ],
)
def test_classify(healthz: Answer, readyz: Answer, state: str, detail: str) -> None:
    health = classify("sink", "http://h:1", healthz, readyz)
    assert (health.state, health.detail, health.ok) == (state, detail, state == READY)


@pytest.fixture
def server() -> Iterator[tuple[HealthState, str]]:
    state = HealthState()
    srv = HealthServer(CollectorRegistry(), state, "127.0.0.1", 0).start()
    try:
        yield state, f"http://127.0.0.1:{srv.port}/"
    finally:
        srv.stop()


def test_probe_follows_the_components_state(server: tuple[HealthState, str]) -> None:
    state, url = server
    assert probe("sink", url, 2.0).state == NOT_READY  # a HealthState starts not ready
    state.set_ready(True)
    ready = probe("sink", url, 2.0)
    assert (ready.state, ready.url, ready.detail) == (READY, url.rstrip("/"), "ready")
    state.set_live(False, "stuck")
    assert probe("sink", url, 2.0).state == NOT_LIVE


def test_probe_of_nothing_listening_is_down_quickly() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    health = probe("edge", f"http://127.0.0.1:{port}", 1.0)
    assert health.state == DOWN and health.detail.startswith("no answer")
