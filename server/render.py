"""On-the-fly renders: a missing ladder variant of a ready image, or a signed size.

Each cold key is rendered once: concurrent requests in this process share one
render (single-flight), and processes share a lock in the hot cache so only one
of them renders while the others poll the tiers for its result. Renders run on
a bounded thread pool; libvips releases the GIL, so they use other cores while
the event loop keeps serving hits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from metrics.definitions import CACHE_REQUESTS, RENDERS_ON_THE_FLY
from pinhole.domain.ids import ImageId
from pinhole.domain.keys import original_key
from pinhole.domain.ladder import Format, Preset
from pinhole.domain.manifest import Manifest
from pinhole.errors import (
    CacheUnavailable,
    ImageTooLarge,
    NotFound,
    ObjectNotFound,
    TransientError,
)
from pinhole.ports import BlobStore, RenderedVariant, RenderEngine, RenderLock
from pinhole.rate_limits import RENDERS, RateLimitGate
from pinhole.settings import Edge
from server.entry import Entry
from server.flight import SingleFlight
from server.tiers import VariantTiers

log = logging.getLogger("pinhole.server")

_NO_LIMIT = 10_000_000


@dataclass(frozen=True, slots=True)
class RenderSpec:
    """What to render and where it lives. ``persist``: ladder variants are written
    to storage like the transcoder's; signed sizes live only in the caches."""

    key: str
    image_id: ImageId
    fmt: Format
    width: int
    height: int
    crop: str | None
    preset: Preset | None
    persist: bool
    # False for a private image (server.privacy): the bytes go to no hot-cache
    # tier, whose keys are public, and no other process waits for them there.
    cached: bool = True

    @property
    def box(self) -> tuple[int, int, str | None]:
        """The box to render into: a 0 side (``640x0``, ``0x480``) follows the
        aspect, so it is unbounded, and there is nothing to crop."""
        if self.width == 0 or self.height == 0:
            return self.width or _NO_LIMIT, self.height or _NO_LIMIT, None
        return self.width, self.height, self.crop

    @property
    def preset_label(self) -> str:
        return self.preset.name if self.preset is not None else "signed"

    @classmethod
    def ladder(
        cls, key: str, image_id: ImageId, preset: Preset, fmt: Format, *, cached: bool = True
    ) -> RenderSpec:
        width = preset.width or _NO_LIMIT
        return cls(key, image_id, fmt, width, _NO_LIMIT, None, preset, True, cached)


class Renderer:
    def __init__(
        self,
        engine: RenderEngine,
        store: BlobStore,
        tiers: VariantTiers,
        lock: RenderLock,
        cfg: Edge,
        *,
        shared_lock: bool,
        limits: RateLimitGate | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.tiers = tiers
        self.lock = lock
        self.cfg = cfg
        self.shared_lock = shared_lock
        self.limits = limits
        self.renders = 0  # renders done by this process, for tests and logs
        self._pool = ThreadPoolExecutor(cfg.max_concurrent_renders, thread_name_prefix="render")
        self._flight: SingleFlight[Entry] = SingleFlight()
        self._leading: set[str] = set()  # keys this process is rendering now
        # Each render holds its original in memory: bound those too, not just the threads.
        self._slots = asyncio.Semaphore(cfg.max_concurrent_renders)

    async def get(
        self, spec: RenderSpec, manifest: Manifest, *, request: web.BaseRequest | None = None
    ) -> Entry:
        """The rendered variant. The client of ``request`` is counted against the
        renders-per-address limit unless this process is rendering the key
        already: a request that joins a render under way causes none."""
        limits = self.limits
        if request is not None and limits is not None and spec.key not in self._leading:
            await limits.check(RENDERS, address=limits.addresses.of(request))
        return await self._flight.run(spec.key, lambda: self._coordinated(spec, manifest))

    async def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        await self.lock.close()

    async def _coordinated(self, spec: RenderSpec, manifest: Manifest) -> Entry:
        self._leading.add(spec.key)
        try:
            return await self._coordinated_render(spec, manifest)
        finally:
            self._leading.discard(spec.key)

    async def _coordinated_render(self, spec: RenderSpec, manifest: Manifest) -> Entry:
        if not self.shared_lock or not spec.cached:
            return await self._render(spec, manifest)
        deadline = time.monotonic() + self.cfg.render_wait_seconds
        delay = 0.02
        while True:
            try:
                token = await self.lock.acquire(spec.key)
            except CacheUnavailable:
                # Without the lock another process may render too: wasted work, not an error.
                CACHE_REQUESTS.labels("redis", "error").inc()
                return await self._render(spec, manifest)
            if token is not None:
                try:
                    # Another process may have finished between our miss and the lock.
                    found = await self.tiers.get(spec.key, storage=spec.persist)
                    if found is not None:
                        return found[0]
                    return await self._render(spec, manifest)
                finally:
                    with contextlib.suppress(CacheUnavailable):
                        await self.lock.release(spec.key, token)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
            found = await self.tiers.get(spec.key, storage=spec.persist)
            if found is not None:
                return found[0]
            if time.monotonic() > deadline:
                log.warning("gave up waiting for another render", extra={"key": spec.key})
                return await self._render(spec, manifest)

    async def _render(self, spec: RenderSpec, manifest: Manifest) -> Entry:
        if manifest.source.bytes > self.cfg.max_render_source_bytes:
            raise ImageTooLarge("The original is too large to render on request.")
        async with self._slots:
            try:
                original = await self.store.get(original_key(spec.image_id))
            except ObjectNotFound:
                raise NotFound("No image with this id.") from None
            loop = asyncio.get_running_loop()
            rendered = await loop.run_in_executor(
                self._pool,
                self._render_sync,
                spec,
                original.body,
                manifest.source.has_alpha,
                manifest.focal_point,
            )
        self.renders += 1
        RENDERS_ON_THE_FLY.labels(spec.preset_label, spec.fmt.value).inc()
        if spec.persist:
            try:
                await self.store.put(spec.key, rendered.body, content_type=spec.fmt.media_type)
            except TransientError as exc:
                # Serve what we made; the next cold request renders again.
                log.warning(
                    "could not store a rendered variant", extra={"key": spec.key, "error": str(exc)}
                )
        if not spec.cached:
            return Entry.from_body(rendered.body, time.time())
        return await self.tiers.put(spec.key, rendered.body, time.time())

    def _render_sync(
        self,
        spec: RenderSpec,
        data: bytes,
        has_alpha: bool,
        focal: tuple[float, float] | None,
    ) -> RenderedVariant:
        if spec.preset is not None:
            return self.engine.render_variant(data, spec.preset, spec.fmt, has_alpha, focal=focal)
        width, height, crop = spec.box
        return self.engine.render_box(
            data, width, height, spec.fmt, has_alpha, crop=crop, focal=focal
        )
