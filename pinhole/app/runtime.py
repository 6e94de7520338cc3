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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Literal

from aiohttp import web

from ingest.app import configure_ingest
from metrics import hot
from metrics.http import mark_process_dead_on_cleanup, metrics_handler
from pinhole.app.vips import configure_vips
from pinhole.app.wiring import (
    Components,
    build_components,
    build_job_queue,
    build_rate_limiter,
    build_record_store,
)
from pinhole.cache.memory import MemoryHotCache
from pinhole.cache.render_lock import LocalRenderLock, RedisRenderLock
from pinhole.clients import ClientAddresses
from pinhole.domain.ids import ImageId
from pinhole.domain.ladder import install
from pinhole.errors import QueueUnavailable
from pinhole.ports import (
    HotCache,
    JobQueue,
    LadderEngine,
    LogPage,
    Message,
    RecordStore,
    RenderLock,
    Subscription,
)
from pinhole.rate_limits import RATE_LIMITS_KEY, RateLimitGate
from pinhole.retry import retry_transient
from pinhole.settings import Settings
from pinhole.web import SERVICE_KEY, Dependency, health_routes
from server.aliases import configure_aliases
from server.app import EDGE_KEY, configure_edge
from server.facts import PresetWatch
from server.purge import CachePurgeRetrier, DeleteListener, edge_group
from server.render import Renderer
from server.tiers import VariantTiers, new_l1
from transcoder.vips_engine import VipsEngine
from transcoder.worker import Transcoder

log = logging.getLogger("pinhole")

STATIC_DIR = Path(__file__).resolve().parents[2] / "server" / "static"
_SHUTDOWN_GRACE_SECONDS = 30.0
# A role that has just started connects to a live broker in milliseconds; an
# upload that arrives first waits this long for it rather than failing, while
# one that comes with the broker down gets its 503 this soon.
_PUBLISH_WAITS_FOR_CONNECT_SECONDS = 2.0


class QueueConnection:
    """The queue, connected in the background for the life of the app.

    aiohttp runs every cleanup context before the site binds its port, so a
    context that waited for the broker kept the whole role deaf (no /healthz,
    no /readyz, no status reads, no 503) for as long as the broker was down.
    Now the role listens at once: /readyz says the queue is unavailable until it
    connects, publishing fails fast with ``QueueUnavailable`` (an upload's 503),
    and consumers wait for ``until_connected`` before they subscribe."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self._connected = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def connect(self) -> None:
        """Until the broker answers (retried with capped backoff), or cancelled."""
        await retry_transient(self.queue.start, what="connect to queue", cap_seconds=5.0)
        self._connected.set()
        log.info("queue connected")

    async def until_connected(self) -> None:
        await self._connected.wait()

    async def ping(self) -> None:
        if not self.connected:
            raise QueueUnavailable("not connected yet (connecting in the background)")
        await self.queue.ping()

    def gated(self) -> JobQueue:
        """The queue for request handlers: a publish before the first connection
        fails within ``_PUBLISH_WAITS_FOR_CONNECT_SECONDS`` instead of waiting on
        the connection attempt."""
        return _GatedQueue(self)


class _GatedQueue:
    """A ``JobQueue`` whose publish waits briefly for the background connection."""

    def __init__(self, connection: QueueConnection) -> None:
        self._connection = connection
        self._queue = connection.queue

    async def start(self) -> None:
        await self._queue.start()

    async def publish(self, topic: str, message: Message) -> None:
        if not self._connection.connected:
            try:
                async with asyncio.timeout(_PUBLISH_WAITS_FOR_CONNECT_SECONDS):
                    await self._connection.until_connected()
            except TimeoutError:
                raise QueueUnavailable(f"publish to {topic}: queue not connected") from None
        await self._queue.publish(topic, message)

    async def subscribe(
        self, topic: str, group: str, *, start: Literal["earliest", "latest"] = "earliest"
    ) -> Subscription:
        return await self._queue.subscribe(topic, group, start=start)

    async def read_log(
        self, topic: str, positions: Mapping[int, int] | None, *, limit: int
    ) -> LogPage:
        return await self._queue.read_log(topic, positions, limit=limit)

    async def ping(self) -> None:
        await self._connection.ping()

    async def close(self) -> None:
        await self._queue.close()


def _base_app(
    service: str,
    dependencies: list[Dependency],
    settings: Settings,
    watch: PresetWatch | None = None,
) -> web.Application:
    """Every role's app: /healthz, /readyz (with the role's preset table, and
    for an edge the ``watch`` that finds manifests of another table), /metrics.
    The configured preset table is installed here, before anything serves."""
    table = settings.preset_table
    install(table)
    if watch is not None:
        dependencies = [*dependencies, Dependency("presets", watch.check, required=False)]
    details = (watch or PresetWatch(table)).details
    app = web.Application(
        # Bodies are streamed by the upload handler; nothing else reads a body.
        client_max_size=1024 * 1024,
        handler_args={"max_field_size": 8190, "max_line_size": 8190},
    )
    # No middlewares: the runner wraps the whole app (pinhole.instrument).
    app[SERVICE_KEY] = service
    app.add_routes(
        health_routes(
            dependencies, timeout_seconds=settings.readiness_timeout_seconds, details=details
        )
    )
    app.router.add_get("/metrics", metrics_handler)
    app.cleanup_ctx.append(hot.flush_periodically)
    app.on_cleanup.append(mark_process_dead_on_cleanup)
    return app


Need = Literal["required", "degraded"]


def _dependencies(
    components: Components,
    connection: QueueConnection,
    *,
    storage: Need | None,
    queue: Need | None,
    cache: Need | None,
) -> list[Dependency]:
    """What /readyz asks, and whether the role is unready without it
    ("required") or serves on without it ("degraded"). The cache is never
    required: with Redis down every role serves from storage."""
    wanted = (
        ("storage", storage, components.store.ping),
        ("queue", queue, connection.ping),
        ("cache", cache, components.cache.ping),
    )
    return [
        Dependency(name, check, required=need == "required")
        for name, need, check in wanted
        if need is not None
    ]


def _components_ctx(
    components: Components, connection: QueueConnection
) -> Callable[[web.Application], AsyncIterator[None]]:
    return _queue_ctx(connection, components.close)


def _queue_ctx(
    connection: QueueConnection, close: Callable[[], Awaitable[None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Connect the queue in the background (retrying while the broker is down),
    so the role binds its port at once; ``close`` at shutdown."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(connection.connect(), name="connect-queue")
        yield
        await _cancel(task)
        await close()

    return ctx


def _transcoder_ctx(
    transcoder: Transcoder, connection: QueueConnection
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The worker consumes once the queue has connected (at once, or when the
    broker comes back); at shutdown it finishes the jobs in hand first."""

    async def run() -> None:
        await connection.until_connected()
        await transcoder.run()

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(), name="transcoder")
        yield
        if not connection.connected:  # never consumed: nothing in hand to finish
            await _cancel(task)
            return
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
    """Re-enqueue pending uploads at start (past ``older_than_seconds``), then
    periodically, in the background: a broker that lost its log, or an in-process
    queue that died with its process, loses no upload and needs no operator."""

    async def run() -> None:
        from pinhole.app.reconcile import reconcile_periodically

        await reconcile_periodically(
            components.store,
            components.queue,
            settings,
            first_older_than_seconds=older_than_seconds,
        )

    return _background_ctx("reconcile", run)


def _local_purge(app: web.Application) -> Callable[[ImageId, list[str]], None]:
    """What a delete must drop from the edge living in this same process."""
    edge = app[EDGE_KEY]

    def purge(image_id: ImageId, keys: list[str]) -> None:
        edge.tiers.l1.delete_nowait(*keys, *edge.signed.pop(image_id))
        edge.facts.forget(image_id)

    return purge


def _rate_limits(app: web.Application, settings: Settings) -> RateLimitGate:
    """The app's rate limits (one gate for `pinhole up`'s ingest and edge), closed
    at shutdown; counted in the cache's store (Redis: across every process)."""
    gate = app.get(RATE_LIMITS_KEY)
    if gate is None:
        limiter = build_rate_limiter(settings.cache, settings.hot_cache)
        addresses = ClientAddresses(settings.trusted_proxies, settings.forwarded_header)
        gate = app[RATE_LIMITS_KEY] = RateLimitGate(
            limiter, settings.rate_limits, addresses=addresses
        )

        async def close(_app: web.Application) -> None:
            await gate.close()

        app.on_cleanup.append(close)
    return gate


def _configure_edge(
    app: web.Application, settings: Settings, components: Components, watch: PresetWatch
) -> None:
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
        VipsEngine(settings.transcode, settings.limits, watch.table),
        components.store,
        tiers,
        lock,
        settings.edge,
        shared_lock=not in_process,
        limits=_rate_limits(app, settings),
    )
    configure_edge(app, tiers, components.store, renderer, settings.edge, watch)


def _records_ctx(records: RecordStore) -> Callable[[web.Application], AsyncIterator[None]]:
    """The record store, closed at shutdown. It connects on first use, so a shard
    server that is down costs only the requests that need it."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        yield
        await records.close()

    return ctx


def _records_dependency(records: RecordStore) -> Dependency:
    # Not required: a shard server down fails that shard's owners (503), while
    # uploads without an owner and every other shard go on.
    return Dependency("records", records.ping, required=False)


def build_ingest_app(settings: Settings, components: Components | None = None) -> web.Application:
    configure_vips()
    components = components or build_components(settings)
    connection = QueueConnection(components.queue)
    records = build_record_store(settings.records, settings.record_shards)
    dependencies = _dependencies(
        components, connection, storage="required", queue="required", cache=None
    )
    app = _base_app("ingest", [*dependencies, _records_dependency(records)], settings)
    _rate_limits(app, settings)
    configure_ingest(
        app,
        settings,
        components.store,
        connection.gated(),
        cache=components.cache,
        records=records,
    )
    app.cleanup_ctx.append(_components_ctx(components, connection))
    app.cleanup_ctx.append(_records_ctx(records))
    return app


def _delete_listener_ctx(
    app: web.Application, settings: Settings, components: Components
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Each edge process purges deleted images from its own L1, facts and signed
    renditions; its own consumer group makes every process see every delete."""

    def run() -> Coroutine[None, None, None]:
        purger = app[EDGE_KEY].purger()
        return DeleteListener(
            components.queue,
            settings.kafka.events_topic,
            edge_group(settings.kafka.consumer_group),
            purger.purge,
            purge_visibility=purger.visibility_changed,
        ).run()

    return _background_ctx("delete-listener", run)


def _cache_purge_ctx(
    settings: Settings, components: Components
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Redis purges that deletes queued while Redis was down, finished once it is
    back (server.purge.CachePurgeRetrier); an in-process cache never queues any."""
    if isinstance(components.cache, MemoryHotCache):

        async def nothing(_app: web.Application) -> AsyncIterator[None]:
            yield

        return nothing
    retrier = CachePurgeRetrier(
        components.store, components.cache, settings.hot_cache.purge_retry_seconds
    )
    return _background_ctx("cache-purge", retrier.run)


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
                purge_alias=purger.purge_alias,
                # Once every edge's knowledge of the image has run out (server.purge).
                repurge_after_seconds=settings.edge.visibility_ttl_seconds + 1.0,
            )
            task = asyncio.create_task(listener.run(), name="cdn-purge")
            yield
            await _cancel(task)

    return ctx


def _webhooks_ctx(
    settings: Settings, queue: JobQueue
) -> Callable[[web.Application], AsyncIterator[None]]:
    """One dispatcher per webhook endpoint (webhooks.dispatcher), each in its own
    consumer group, over one session that connects only to checked addresses."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        from pinhole.netguard import guarded_session
        from webhooks.dispatcher import EndpointDispatcher

        async with guarded_session(allow_loopback=settings.webhooks.allow_loopback) as session:
            tasks = [
                asyncio.create_task(
                    EndpointDispatcher(
                        name, endpoint, queue, settings.kafka, settings.webhooks, session
                    ).run(),
                    name=f"webhooks-{name}",
                )
                for name, endpoint in settings.webhooks.endpoints.items()
            ]
            yield
            for task in tasks:
                await _cancel(task)

    return ctx


ListenerCtx = Callable[[Settings, JobQueue], Callable[[web.Application], AsyncIterator[None]]]


def _event_listener_app(service: str, settings: Settings, listen: ListenerCtx) -> web.Application:
    """A role that only reads the events topic, with a small HTTP side for
    /healthz, /readyz and /metrics; ready once the queue is connected."""
    queue = build_job_queue(settings.queue, settings.kafka)
    connection = QueueConnection(queue)
    app = _base_app(service, [Dependency("queue", connection.ping)], settings)
    app.cleanup_ctx.append(_queue_ctx(connection, queue.close))
    # After the queue's context, so it stops before the queue closes.
    app.cleanup_ctx.append(listen(settings, queue))
    return app


def build_webhooks_app(settings: Settings) -> web.Application:
    """The webhook dispatchers (webhooks.dispatcher)."""
    return _event_listener_app("webhooks", settings, _webhooks_ctx)


def build_cdn_purge_app(settings: Settings) -> web.Application:
    """The CDN purger (server.cdn_purge)."""
    return _event_listener_app("cdn-purge", settings, _cdn_purge_ctx)


def build_edge_app(settings: Settings, components: Components | None = None) -> web.Application:
    components = components or build_components(settings)
    connection = QueueConnection(components.queue)
    # Never unready for a dependency: an edge serves what its caches hold with
    # storage down, from storage with Redis down, and hears deletes (the queue)
    # once the broker is back. Every edge leaving the balancer at once because
    # storage is down would take the cached content dark too (README, Reliability).
    dependencies = _dependencies(
        components, connection, storage="degraded", queue="degraded", cache="degraded"
    )
    records = build_record_store(settings.records, settings.record_shards)
    watch = PresetWatch(settings.preset_table)
    app = _base_app("edge", [*dependencies, _records_dependency(records)], settings, watch)
    _configure_edge(app, settings, components, watch)
    configure_aliases(app, records)
    app.cleanup_ctx.append(_components_ctx(components, connection))
    app.cleanup_ctx.append(_records_ctx(records))
    # After the components' context, so it stops before the queue closes.
    app.cleanup_ctx.append(_delete_listener_ctx(app, settings, components))
    app.cleanup_ctx.append(_cache_purge_ctx(settings, components))
    return app


def build_render_engine(settings: Settings) -> LadderEngine:
    """``transcode.engine`` picks the engine; both render the same ladder."""
    if settings.transcode.engine == "pillow":
        from transcoder.pillow_engine import PillowEngine

        return PillowEngine(settings.transcode, settings.limits, settings.preset_table)
    return VipsEngine(settings.transcode, settings.limits, settings.preset_table)


def build_transcoder(settings: Settings, components: Components) -> Transcoder:
    configure_vips(settings.transcode.vips_threads_per_op)
    return Transcoder(settings, components.store, components.queue, build_render_engine(settings))


def build_transcoder_app(
    settings: Settings, components: Components | None = None
) -> web.Application:
    """The worker, with a small HTTP side for /healthz, /readyz and /metrics."""
    components = components or build_components(settings)
    connection = QueueConnection(components.queue)
    dependencies = _dependencies(
        components, connection, storage="required", queue="required", cache=None
    )
    app = _base_app("transcoder", dependencies, settings)
    app.cleanup_ctx.append(_components_ctx(components, connection))
    app.cleanup_ctx.append(_reconcile_ctx(settings, components, settings.reconcile_after_seconds))
    app.cleanup_ctx.append(_transcoder_ctx(build_transcoder(settings, components), connection))
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
    connection = QueueConnection(components.queue)
    records = build_record_store(settings.records, settings.record_shards)
    dependencies = _dependencies(
        components, connection, storage="required", queue="required", cache="degraded"
    )
    watch = PresetWatch(settings.preset_table)
    app = _base_app("up", [*dependencies, _records_dependency(records)], settings, watch)
    _configure_edge(app, settings, components, watch)
    configure_ingest(
        app,
        settings,
        components.store,
        connection.gated(),
        cache=components.cache,
        local_purge=_local_purge(app),
        records=records,
    )
    configure_aliases(app, records)
    app.cleanup_ctx.append(_records_ctx(records))
    app.add_routes(_page_routes())
    app.cleanup_ctx.append(_components_ctx(components, connection))
    # An in-process queue died with the last process: every pending image is orphaned.
    in_process_queue = settings.queue.startswith("memory:")
    reconcile_after = 0.0 if in_process_queue else settings.reconcile_after_seconds
    app.cleanup_ctx.append(_reconcile_ctx(settings, components, reconcile_after))
    app.cleanup_ctx.append(_transcoder_ctx(build_transcoder(settings, components), connection))
    # Deletes reach the edge here through _local_purge; the listener is for
    # image.visibility (a delete it also hears is purged twice, harmlessly).
    app.cleanup_ctx.append(_delete_listener_ctx(app, settings, components))
    if settings.cdn_purge.configured:  # a CDN in front of `pinhole up`
        app.cleanup_ctx.append(_cdn_purge_ctx(settings, components.queue))
    if settings.webhooks.configured:
        app.cleanup_ctx.append(_webhooks_ctx(settings, components.queue))
    app.cleanup_ctx.append(_cache_purge_ctx(settings, components))
    return app
