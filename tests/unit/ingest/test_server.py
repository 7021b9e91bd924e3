"""The edge's process wiring: the garbage collector tuned once the edge has started."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from ingest import server
from ingest.settings import IngestSettings
from runtime.rules import parse_rules

RULES = parse_rules("sources:\n  - {name: web, write_keys: [wk]}\n")


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


class _Producer:
    ready = True

    def __init__(self, settings: Any, metrics: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self, timeout: float) -> None:
        pass


def _start_and_stop(app: Any) -> tuple[tuple[int, int, int], int]:
    """Run the app's lifespan; the collector's thresholds and frozen count once started."""
    seen: list[tuple[tuple[int, int, int], int]] = []

    async def lifespan() -> None:
        messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                seen.append((gc.get_threshold(), gc.get_freeze_count()))

        await app({"type": "lifespan"}, receive, send)

    asyncio.run(lifespan())
    return seen[0]


def test_the_edge_process_tunes_the_collector_once_started(
    monkeypatch: pytest.MonkeyPatch, restore_gc: None
) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    monkeypatch.setattr(server, "EventProducer", _Producer)
    app, _ = server.build_app(IngestSettings(), RULES, use_suppression_list=False, tune_gc=True)
    (young, middle, full), frozen = _start_and_stop(app)
    assert (young, middle, full) == (server.GC_YOUNG_THRESHOLD, 10, server.GC_FULL_THRESHOLD)
    assert frozen > 1000  # start-up's objects (modules, settings, the app) out of the walks


def test_an_app_hosted_elsewhere_leaves_the_collector_alone(
    monkeypatch: pytest.MonkeyPatch, restore_gc: None
) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    monkeypatch.setattr(server, "EventProducer", _Producer)
    app, _ = server.build_app(IngestSettings(), RULES, use_suppression_list=False)
    assert _start_and_stop(app) == ((700, 10, 10), 0)


def test_serve_builds_the_app_with_the_collector_tuned(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_build_app(settings: Any, rules: Any, **kwargs: Any) -> tuple[Any, Any]:
        calls.append(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(server, "build_app", fake_build_app)
    with pytest.raises(RuntimeError, match="stop here"):
        server.serve(IngestSettings(), RULES)
    assert calls == [{"tune_gc": True}]
