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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path

from aiohttp import web

from ingest.app import configure_ingest
from metrics import hot
from metrics.http import mark_process_dead_on_cleanup, metrics_handler
from pinhole.app.vips import configure_vips
from pinhole.app.wiring import Components, build_components, build_job_queue
from pinhole.cache.memory import MemoryHotCache
from pinhole.cache.render_lock import LocalRenderLock, RedisRenderLock
from pinhole.domain.ids import ImageId
from pinhole.ports import HotCache, JobQueue, LadderEngine, RenderLock
from pinhole.retry import retry_transient
from pinhole.settings import Settings
from pinhole.web import SERVICE_KEY, ReadinessCheck, health_routes
from server.app import EDGE_KEY, configure_edge
from server.purge import DeleteListener, edge_group
from server.render import Renderer
from server.tiers import VariantTiers, new_l1
from transcoder.vips_engine import VipsEngine
from transcoder.worker import Transcoder

log = logging.getLogger("pinhole")

STATIC_DIR = Path(__file__).resolve().parents[2] / "server" / "static"
_SHUTDOWN_GRACE_SECONDS = 30.0


def _base_app(service: str, checks: list[tuple[str, ReadinessCheck]]) -> web.Application:
    app = web.Application(
        # Bodies are streamed by the upload handler; nothing else reads a body.
        client_max_size=1024 * 1024,
        handler_args={"max_field_size": 8190, "max_line_size": 8190},
    )
    # No middlewares: the runner wraps the whole app (pinhole.instrument).
    app[SERVICE_KEY] = service
    app.add_routes(health_routes(checks))
    app.router.add_get("/metrics", metrics_handler)
    app.cleanup_ctx.append(hot.flush_periodically)
    app.on_cleanup.append(mark_process_dead_on_cleanup)
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
    return _queue_ctx(components.queue, components.close)


def _queue_ctx(
    queue: JobQueue, close: Callable[[], Awaitable[None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Connect ``queue`` at start (retrying while the broker is down); ``close``
    at shutdown."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        await retry_transient(queue.start, what="connect to queue", cap_seconds=5.0)
        yield
        await close()

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
        await _cancel(task)

    return ctx


def _background_ctx(
    name: str, run: Callable[[], Coroutine[None, None, None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """``run()`` as a task for the app's lifetime, cancelled at shutdown."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(), name=name)
        yield
        await _cancel(task)

    return ctx


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _reconcile_ctx(
    settings: Settings, components: Components, older_than_seconds: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Re-enqueue pending uploads at start, in the background: a broker that lost
    its log, or an in-process queue that died with its process, loses no upload."""

    async def run() -> None:
        from pinhole.app.reconcile import reconcile

        await retry_transient(
            lambda: reconcile(
                components.store,
                components.queue,
                settings.kafka,
                older_than_seconds=older_than_seconds,
            ),
            what="reconcile at start",
            cap_seconds=30.0,
        )

    return _background_ctx("reconcile", run)


def _local_purge(app: web.Application) -> Callable[[ImageId, list[str]], None]:
    """What a delete must drop from the edge living in this same process."""
    edge = app[EDGE_KEY]

    def purge(image_id: ImageId, keys: list[str]) -> None:
        edge.tiers.l1.delete_nowait(*keys, *edge.signed.pop(image_id))
        edge.facts.forget(image_id)

    return purge


def _configure_edge(app: web.Application, settings: Settings, components: Components) -> None:
    # The transcoder's thread count: libaom's AVIF output differs between one
    # thread and several, and a variant the edge renders must be the bytes the
    # transcoder would have written.
    configure_vips(settings.transcode.vips_threads_per_op)
    # An in-process cache is no second tier behind the L1, and a delete in
    # `pinhole up` evicts the L1 directly (_local_purge).
    in_process = isinstance(components.cache, MemoryHotCache)
    l2: HotCache | None = None if in_process else components.cache
    l1 = new_l1(settings.hot_cache)
    tiers = VariantTiers(l1, l2, components.store, settings.hot_cache)
    lock: RenderLock = (
        LocalRenderLock()
        if in_process
        else RedisRenderLock.from_url(
            settings.cache, settings.edge.render_lock_ms, settings.hot_cache.timeout_seconds
        )
    )
    renderer = Renderer(
        VipsEngine(settings.transcode, settings.limits),
        components.store,
        tiers,
        lock,
        settings.edge,
        shared_lock=not in_process,
    )
    configure_edge(app, tiers, components.store, renderer, settings.edge)


def build_ingest_app(settings: Settings, components: Components | None = None) -> web.Application:
    configure_vips()
    components = components or build_components(settings)
    app = _base_app("ingest", _checks(components, store=True, queue=True, cache=False))
    configure_ingest(app, settings, components.store, components.queue, cache=components.cache)
    app.cleanup_ctx.append(_components_ctx(components))
    return app


def _delete_listener_ctx(
    app: web.Application, settings: Settings, components: Components
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Each edge process purges deleted images from its own L1, facts and signed
    renditions; its own consumer group makes every process see every delete."""

    def run() -> Coroutine[None, None, None]:
        return DeleteListener(
            components.queue,
            settings.kafka.events_topic,
            edge_group(settings.kafka.consumer_group),
            app[EDGE_KEY].purger().purge,
        ).run()

    return _background_ctx("delete-listener", run)


def _cdn_purge_ctx(
    settings: Settings, queue: JobQueue
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Deleted images purged from the configured CDN caches (server.cdn_purge),
    in the group every purger replica shares."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        import aiohttp

        from server.cdn_caches import build_cdn_caches
        from server.cdn_purge import CdnPurger, purge_group

        timeout = aiohttp.ClientTimeout(total=settings.cdn_purge.timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            purger = CdnPurger(
                build_cdn_caches(settings.cdn_purge, session),
                attempts=settings.cdn_purge.attempts,
            )
            listener = DeleteListener(
                queue,
                settings.kafka.events_topic,
                purge_group(settings.kafka.consumer_group),
                purger.purge,
                who="cdn purger",
            )
            task = asyncio.create_task(listener.run(), name="cdn-purge")
            yield
            await _cancel(task)

    return ctx


def build_cdn_purge_app(settings: Settings) -> web.Application:
    """The CDN purger, with a small HTTP side for /healthz, /readyz and /metrics."""
    queue = build_job_queue(settings.queue, settings.kafka)
    app = _base_app("cdn-purge", [("queue", queue.ping)])
    app.cleanup_ctx.append(_queue_ctx(queue, queue.close))
    # After the queue's context, so it stops before the queue closes.
    app.cleanup_ctx.append(_cdn_purge_ctx(settings, queue))
    return app


def build_edge_app(settings: Settings, components: Components | None = None) -> web.Application:
    components = components or build_components(settings)
    app = _base_app("edge", _checks(components, store=True, queue=False, cache=True))
    _configure_edge(app, settings, components)
    app.cleanup_ctx.append(_components_ctx(components))
    # After the components' context, so it stops before the queue closes.
    app.cleanup_ctx.append(_delete_listener_ctx(app, settings, components))
    return app


def build_render_engine(settings: Settings) -> LadderEngine:
    """``transcode.engine`` picks the engine; both render the same ladder."""
    if settings.transcode.engine == "pillow":
        from transcoder.pillow_engine import PillowEngine

        return PillowEngine(settings.transcode, settings.limits)
    return VipsEngine(settings.transcode, settings.limits)


def build_transcoder(settings: Settings, components: Components) -> Transcoder:
    configure_vips(settings.transcode.vips_threads_per_op)
    return Transcoder(settings, components.store, components.queue, build_render_engine(settings))


def build_transcoder_app(
    settings: Settings, components: Components | None = None
) -> web.Application:
    """The worker, with a small HTTP side for /healthz, /readyz and /metrics."""
    components = components or build_components(settings)
    app = _base_app("transcoder", _checks(components, store=True, queue=True, cache=False))
    app.cleanup_ctx.append(_components_ctx(components))
    app.cleanup_ctx.append(_reconcile_ctx(settings, components, settings.reconcile_after_seconds))
    app.cleanup_ctx.append(_transcoder_ctx(build_transcoder(settings, components)))
    return app


_PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


async def _index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)


def _asset_route(path: Path) -> web.RouteDef:
    headers = {**_PAGE_HEADERS, "Content-Type": _ASSET_TYPES[path.suffix]}

    async def asset(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(path, headers=headers)

    return web.get(f"/static/{path.name}", asset)


def _page_routes() -> list[web.RouteDef]:
    """The upload page and its JS/CSS: a fixed set of files, listed once at start.

    ``no-cache`` (revalidate by ETag) so an upgraded server never runs stale JS.
    """
    assets = sorted(p for p in STATIC_DIR.iterdir() if p.suffix in _ASSET_TYPES)
    return [web.get("/", _index), *(_asset_route(p) for p in assets)]


def build_up_app(settings: Settings) -> web.Application:
    """Ingest, transcoder and edge in one process on one port, embedded defaults."""
    components = build_components(settings)
    app = _base_app("up", _checks(components, store=True, queue=True, cache=True))
    _configure_edge(app, settings, components)
    configure_ingest(
        app,
        settings,
        components.store,
        components.queue,
        cache=components.cache,
        local_purge=_local_purge(app),
    )
    app.add_routes(_page_routes())
    app.cleanup_ctx.append(_components_ctx(components))
    # An in-process queue died with the last process: every pending image is orphaned.
    in_process_queue = settings.queue.startswith("memory:")
    reconcile_after = 0.0 if in_process_queue else settings.reconcile_after_seconds
    app.cleanup_ctx.append(_reconcile_ctx(settings, components, reconcile_after))
    app.cleanup_ctx.append(_transcoder_ctx(build_transcoder(settings, components)))
    if settings.cdn_purge.configured:  # a CDN in front of `pinhole up`
        app.cleanup_ctx.append(_cdn_purge_ctx(settings, components.queue))
    return app
