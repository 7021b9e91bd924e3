"""Wiring of the edge: settings and rules in, a uvicorn server (httptools, uvloop) out.

One process serves the API and /metrics on the same port, or, with ``admin_port`` set, /metrics,
/healthz and /readyz on a port of their own (a small thread, runtime.health.HealthServer) that
need not be reachable from the internet; the API port then serves no /metrics.

On this kind of 2-core machine one process is the right shape: the broker needs the other core,
and a second worker would compete with it (bench/ingest.py measures it).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from ingest.app import IngestApp
from ingest.metrics import IngestMetrics
from ingest.producer import EventProducer
from ingest.records import SuppressionCheck
from ingest.settings import IngestSettings
from runtime.health import HealthServer, HealthState
from runtime.rules import Rules
from schemas.avro_compiled import compile_writer
from schemas.codec import RAW_EVENT, AvroCodec

logger = logging.getLogger(__name__)

#: Thresholds of the cyclic garbage collector while the edge serves (CPython's defaults: 700
#: and 10). A request of 100 events parses into thousands of dicts and lists that reference
#: counting frees when the request ends; at the defaults the collector ran a young collection
#: every few events' worth of them and walked the whole heap (uvicorn's, pydantic's, the
#: modules') every few hundred requests: ~20% of the event loop's CPU under load, ~3% tuned
#: (bench/results/ingest-hot-path.md). Cycles are still collected, only less often.
GC_YOUNG_THRESHOLD = 20_000
GC_FULL_THRESHOLD = 1_000


def tune_collector() -> None:
    """Move what start-up made out of the collector's sight (`gc.freeze`: modules, settings,
    the producer) and make collections rare (GC_YOUNG_THRESHOLD, GC_FULL_THRESHOLD); for the
    edge's own process only, once it has started."""
    gc.collect()
    gc.freeze()
    _young, middle, full = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, max(full, GC_FULL_THRESHOLD))


def _suppression_list(settings: IngestSettings) -> Any | None:
    """runtime.suppressions.SuppressionList when that module is present (written by the lead)."""
    try:
        from runtime.suppressions import SuppressionList  # type: ignore[import-not-found]
    except ImportError:
        logger.warning("runtime.suppressions not available: suppressed users are not filtered")
        return None
    return SuppressionList(settings.kafka, settings.kafka.topics)


def build_app(
    settings: IngestSettings,
    rules: Rules,
    registry: CollectorRegistry | None = None,
    suppressions: SuppressionCheck | None = None,
    use_suppression_list: bool = True,
    tune_gc: bool = False,
) -> tuple[IngestApp, EventProducer]:
    """The ASGI app and its producer; the app's lifespan starts and stops both.

    `tune_gc`: once started, tune the process's garbage collector (tune_collector); for the
    edge's own process (serve), not for a test that hosts the app.
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = IngestMetrics(registry)
    health = HealthState()
    producer = EventProducer(settings, metrics)
    encode = compile_writer(AvroCodec().latest(RAW_EVENT))
    managed: Any | None = None
    if suppressions is None and use_suppression_list:
        managed = _suppression_list(settings)
        suppressions = managed
    health.checks["kafka"] = lambda: producer.ready
    if managed is not None and hasattr(managed, "ready"):
        health.checks["suppressions"] = lambda: bool(managed.ready)

    admin: list[HealthServer] = []

    async def startup() -> None:
        if settings.admin_port is not None:
            # first, so the admin port answers /healthz while the producer connects
            admin.append(
                HealthServer(registry, health, settings.admin_host, settings.admin_port).start()
            )
        await asyncio.to_thread(producer.start)
        if managed is not None:
            await asyncio.to_thread(managed.start)
            # Serving before the list is loaded would let a forgotten user's events through.
            ready = await asyncio.to_thread(managed.wait_ready, settings.suppressions_wait_s)
            if not ready:
                logger.error("suppression list not loaded; /readyz reports not ready")
        if tune_gc:
            tune_collector()

    async def shutdown() -> None:
        await asyncio.to_thread(producer.stop, settings.produce_timeout_s)
        if managed is not None:
            await asyncio.to_thread(managed.stop)
        for server in admin:
            server.stop()

    app = IngestApp(
        settings,
        rules,
        producer,
        encode,
        metrics,
        health,
        registry,
        suppressions=suppressions,
        on_startup=startup,
        on_shutdown=shutdown,
    )
    return app, producer


def uvicorn_config(app: IngestApp, settings: IngestSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.limit_concurrency,
    )


def serve(settings: IngestSettings, rules: Rules) -> int:
    """Run the edge until SIGINT/SIGTERM; 0 on a clean stop, 1 when start-up failed."""
    app, _ = build_app(settings, rules, tune_gc=True)
    server = uvicorn.Server(uvicorn_config(app, settings))
    server.run()
    return 0 if server.started else 1
