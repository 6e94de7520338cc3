"""L1 in-process LRU → L2 hot cache (Redis) → storage, filling on the way back.

A failing L2 is counted and skipped: Redis down costs latency, never a 5xx.
Concurrent misses for one key share a single storage read (single-flight).
"""

from __future__ import annotations

import logging

from metrics.definitions import CACHE_REQUESTS
from metrics.hot import HotCounter
from pinhole.cache.memory import MemoryLru
from pinhole.errors import CacheUnavailable, ObjectNotFound
from pinhole.ports import BlobStore, HotCache
from pinhole.settings import Cache
from server.entry import Entry
from server.flight import SingleFlight

log = logging.getLogger("pinhole.server")

# Bound once: ``labels()`` takes a lock and a dict lookup, on every request otherwise.
_L1_HIT = HotCounter(CACHE_REQUESTS.labels("l1", "hit"))
_L1_MISS = HotCounter(CACHE_REQUESTS.labels("l1", "miss"))


def new_l1(cfg: Cache) -> MemoryLru[Entry]:
    """The per-process tier: decoded entries, so a hit unpacks and copies nothing."""
    return MemoryLru(cfg.l1_max_bytes, cfg.max_object_bytes, size_of=Entry.size)


class VariantTiers:
    def __init__(
        self, l1: MemoryLru[Entry], l2: HotCache | None, store: BlobStore, cfg: Cache
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self.store = store
        self.cfg = cfg
        self._flight: SingleFlight[tuple[Entry, str] | None] = SingleFlight()

    def get_l1(self, key: str) -> Entry | None:
        """The in-process tier alone: no coroutine for the hottest path."""
        entry = self.l1.get_nowait(key)
        if entry is not None:
            _L1_HIT.inc()
        else:
            _L1_MISS.inc()
        return entry

    async def get(self, key: str, *, storage: bool = True) -> tuple[Entry, str] | None:
        """The entry and the tier that supplied it, or ``None`` if no tier has it.

        ``storage=False`` for keys that live only in the caches (signed sizes).
        """
        entry = self.get_l1(key)
        if entry is not None:
            return entry, "l1"
        return await self.get_below_l1(key, storage=storage)

    async def get_below_l1(self, key: str, *, storage: bool = True) -> tuple[Entry, str] | None:
        """After an L1 miss (``get_l1``): Redis, then storage, read once per key at a time."""
        return await self._flight.run(key, lambda: self._fill(key, storage))

    async def _fill(self, key: str, storage: bool) -> tuple[Entry, str] | None:
        if self.l2 is not None:
            try:
                packed = await self.l2.get(key)
            except CacheUnavailable:
                CACHE_REQUESTS.labels("redis", "error").inc()
                packed = None
            else:
                CACHE_REQUESTS.labels("redis", "hit" if packed is not None else "miss").inc()
            if packed is not None:
                entry = Entry.unpack(packed)
                self.l1.set_nowait(key, entry, self.cfg.ttl_seconds)
                return entry, "redis"
        if not storage:
            return None
        found = await self.get_uncached(key)
        if found is not None:
            await self._fill_caches(key, found[0])
        return found

    async def get_uncached(self, key: str) -> tuple[Entry, str] | None:
        """Storage alone, filling no tier: a private image's variant (server.privacy)."""
        try:
            stored = await self.store.get(key)
        except ObjectNotFound:
            CACHE_REQUESTS.labels("storage", "miss").inc()
            return None
        CACHE_REQUESTS.labels("storage", "hit").inc()
        return Entry.from_body(stored.body, stored.info.last_modified), "storage"

    async def put(self, key: str, body: bytes, last_modified: float) -> Entry:
        """Fill the caches with bytes made here (an on-the-fly render)."""
        entry = Entry.from_body(body, last_modified)
        await self._fill_caches(key, entry)
        return entry

    def evict(self, *keys: str) -> None:
        self.l1.delete_nowait(*keys)

    async def _fill_caches(self, key: str, entry: Entry) -> None:
        if len(entry.body) > self.cfg.max_object_bytes:
            return
        self.l1.set_nowait(key, entry, self.cfg.ttl_seconds)
        if self.l2 is not None:
            try:
                await self.l2.set(key, entry.pack(), ttl_seconds=self.cfg.ttl_seconds)
            except CacheUnavailable:
                CACHE_REQUESTS.labels("redis", "error").inc()
