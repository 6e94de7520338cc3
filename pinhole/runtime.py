"""Assemble the aiohttp apps of each role, with their lifecycles.

Each role is one ``web.Application``: the process-level concerns (JSON errors,
request metrics, /healthz, /readyz, /metrics) are added here once for all.
``pinhole up`` mounts every role's routes on one app and shares one set of
components, so its in-process queue connects ingest to the transcoder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from ingest.app import configure_ingest
from metrics.http import metrics_handler, metrics_middleware
from pinhole.cache.memory import MemoryHotCache
from pinhole.retry import retry_transient
from pinhole.settings import Settings
from pinhole.vips import configure_vips
from pinhole.web import ReadinessCheck, error_middleware, health_routes
from pinhole.wiring import Components, build_components
from server.app import configure_edge
from server.tiers import VariantTiers
from transcoder.vips_engine import VipsEngine
from transcoder.worker import Transcoder

log = logging.getLogger("pinhole")

STATIC_DIR = Path(__file__).resolve().parent.parent / "server" / "static"
_SHUTDOWN_GRACE_SECONDS = 30.0


def _base_app(service: str, checks: list[tuple[str, ReadinessCheck]]) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware(service), error_middleware],
        # Bodies are streamed by the upload handler; nothing else reads a body.
        client_max_size=1024 * 1024,
        handler_args={"max_field_size": 8190, "max_line_size": 8190},
    )
    app.add_routes(health_routes(checks))
    app.router.add_get("/metrics", metrics_handler)
    return app


def _checks(
    components: Components, *, store: bool, queue: bool, cache: bool
) -> list[tuple[str, ReadinessCheck]]:
    checks: list[tuple[str, ReadinessCheck]] = []
    if store:
        checks.append(("storage", components.store.ping))
    if queue:
        checks.append(("queue", components.queue.ping))
    if cache:
        checks.append(("cache", components.cache.ping))
    return checks


def _components_ctx(components: Components) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        await retry_transient(components.queue.start, what="connect to queue", cap_seconds=5.0)
        yield
        await components.close()

    return ctx


def _transcoder_ctx(transcoder: Transcoder) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(transcoder.run(), name="transcoder")
        yield
        transcoder.stop()
        try:
            await asyncio.wait_for(task, _SHUTDOWN_GRACE_SECONDS)
        except TimeoutError:
            log.warning("transcoder did not stop in time; abandoning the job in hand")
        with contextlib.suppress(asyncio.CancelledError):
            task.cancel()
            await task

    return ctx


def _edge_tiers(settings: Settings, components: Components) -> VariantTiers:
    l1 = MemoryHotCache(settings.hot_cache.l1_max_bytes, settings.hot_cache.max_object_bytes)
    # With an in-process L2 the L1 already is that tier.
    l2 = None if settings.cache.startswith("memory:") else components.cache
    return VariantTiers(l1, l2, components.store, settings.hot_cache)


def build_ingest_app(settings: Settings, components: Components | None = None) -> web.Application:
    configure_vips()
    components = components or build_components(settings)
    app = _base_app("ingest", _checks(components, store=True, queue=True, cache=False))
    configure_ingest(app, settings, components.store, components.queue)
    app.cleanup_ctx.append(_components_ctx(components))
    return app


def build_edge_app(settings: Settings, components: Components | None = None) -> web.Application:
    components = components or build_components(settings)
    app = _base_app("edge", _checks(components, store=True, queue=False, cache=True))
    configure_edge(app, _edge_tiers(settings, components), components.store)
    app.cleanup_ctx.append(_components_ctx(components))
    return app


def build_transcoder(settings: Settings, components: Components) -> Transcoder:
    configure_vips()
    return Transcoder(settings, components.store, components.queue, VipsEngine(settings.transcode))


def build_transcoder_app(
    settings: Settings, components: Components | None = None
) -> web.Application:
    """The worker, with a small HTTP side for /healthz, /readyz and /metrics."""
    components = components or build_components(settings)
    app = _base_app("transcoder", _checks(components, store=True, queue=True, cache=False))
    app.cleanup_ctx.append(_components_ctx(components))
    app.cleanup_ctx.append(_transcoder_ctx(build_transcoder(settings, components)))
    return app


async def _index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def build_up_app(settings: Settings) -> web.Application:
    """Ingest, transcoder and edge in one process on one port, embedded defaults."""
    components = build_components(settings)
    app = _base_app("up", _checks(components, store=True, queue=True, cache=True))
    configure_ingest(app, settings, components.store, components.queue)
    configure_edge(app, _edge_tiers(settings, components), components.store)
    app.router.add_get("/", _index)
    app.cleanup_ctx.append(_components_ctx(components))
    app.cleanup_ctx.append(_transcoder_ctx(build_transcoder(settings, components)))
    return app
