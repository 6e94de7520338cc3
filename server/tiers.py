"""L1 in-process LRU → L2 hot cache (Redis) → storage, filling on the way back.

A failing L2 is counted and skipped: Redis down costs latency, never a 5xx.
Concurrent misses for one key share a single storage read (single-flight).
"""

from __future__ import annotations

import asyncio
import logging

from metrics.definitions import CACHE_REQUESTS
from pinhole.cache.memory import MemoryHotCache
from pinhole.errors import CacheUnavailable, ObjectNotFound
from pinhole.ports import BlobStore, HotCache
from pinhole.settings import Cache
from server.entry import Entry

log = logging.getLogger("pinhole.server")


class VariantTiers:
    def __init__(
        self, l1: MemoryHotCache, l2: HotCache | None, store: BlobStore, cfg: Cache
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self.store = store
        self.cfg = cfg
        self._inflight: dict[str, asyncio.Future[tuple[Entry, str] | None]] = {}

    async def get(self, key: str) -> tuple[Entry, str] | None:
        """The entry and the tier that supplied it, or ``None`` if storage has none."""
        packed = self.l1.get_nowait(key)
        if packed is not None:
            CACHE_REQUESTS.labels("l1", "hit").inc()
            return Entry.unpack(packed), "l1"
        CACHE_REQUESTS.labels("l1", "miss").inc()
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[Entry, str] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._inflight[key] = future
        try:
            result = await self._fill(key)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            # Followers re-raise it; retrieve it here so an unshared failure is not logged twice.
            future.exception()
            raise
        finally:
            del self._inflight[key]

    async def _fill(self, key: str) -> tuple[Entry, str] | None:
        if self.l2 is not None:
            try:
                packed = await self.l2.get(key)
            except CacheUnavailable:
                CACHE_REQUESTS.labels("redis", "error").inc()
                packed = None
            else:
                CACHE_REQUESTS.labels("redis", "hit" if packed is not None else "miss").inc()
            if packed is not None:
                self.l1.set_nowait(key, packed, self.cfg.ttl_seconds)
                return Entry.unpack(packed), "redis"
        try:
            stored = await self.store.get(key)
        except ObjectNotFound:
            CACHE_REQUESTS.labels("storage", "miss").inc()
            return None
        CACHE_REQUESTS.labels("storage", "hit").inc()
        entry = Entry.from_body(stored.body, stored.info.last_modified)
        if len(stored.body) <= self.cfg.max_object_bytes:
            packed = entry.pack()
            self.l1.set_nowait(key, packed, self.cfg.ttl_seconds)
            if self.l2 is not None:
                try:
                    await self.l2.set(key, packed, ttl_seconds=self.cfg.ttl_seconds)
                except CacheUnavailable:
                    CACHE_REQUESTS.labels("redis", "error").inc()
        return entry, "storage"
