"""A ``BlobStore`` over several stores, routed by the shard each key's image id carries.

No lookup table: ``shard_of_key`` reads the shard from the key and the live
``ShardMap`` says which store reads and which stores write it. The map is
reloaded from the control document at most ``refresh_seconds`` old before any
operation, so a migration's phase change reaches every process without a
restart (README "Sharding and migrations" has the protocol).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

from pinhole.domain.keys import shard_of_key
from pinhole.errors import StorageUnavailable
from pinhole.ports import BlobStore, ObjectInfo, StoredObject
from pinhole.sharding import DEFAULT_STORE, Route, ShardMap, ShardMapError, load_shard_map

log = logging.getLogger("pinhole.storage.sharded")


class ShardedBlobStore:
    """Routes each key to its shard's store; ``stores`` must include "default"."""

    def __init__(
        self, stores: Mapping[str, BlobStore], seed: ShardMap, *, refresh_seconds: float
    ) -> None:
        if DEFAULT_STORE not in stores:
            raise ValueError("a sharded store needs a store named 'default'")
        self.stores = dict(stores)
        self.seed = seed
        self.refresh_seconds = refresh_seconds
        self._map = seed
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ShardedBlobStore({self.stores!r})"

    @property
    def control(self) -> BlobStore:
        """Where the live shard map document is kept."""
        return self.stores[DEFAULT_STORE]

    async def shard_map(self, *, fresh: bool = False) -> ShardMap:
        """The live map, reloaded if older than ``refresh_seconds`` (or ``fresh``)."""
        loaded_at = self._loaded_at
        if (
            not fresh
            and loaded_at is not None
            and time.monotonic() - loaded_at < self.refresh_seconds
        ):
            return self._map
        async with self._lock:
            if not fresh and self._loaded_at is not None and self._loaded_at != loaded_at:
                return self._map  # another task reloaded while we waited
            started = time.monotonic()
            try:
                loaded = await load_shard_map(self.control, self.seed)
            except (StorageUnavailable, ShardMapError) as exc:
                if self._loaded_at is None:
                    raise StorageUnavailable(f"shard map: {exc}") from exc
                # Keep routing by the last good map; the next operation retries.
                log.warning("shard map reload failed", extra={"error": str(exc)})
                return self._map
            if loaded.version != self._map.version:
                log.info("shard map changed", extra={"version": loaded.version})
            self._map, self._loaded_at = loaded, started
            return loaded

    def _store(self, name: str) -> BlobStore:
        store = self.stores.get(name)
        if store is None:
            # The live map names a store this process was not configured with:
            # refusing is safer than writing where nobody will look.
            raise StorageUnavailable(
                f"the shard map routes to store {name!r}, which PINHOLE_SHARDING__STORES "
                "does not define in this process"
            )
        return store

    async def _route(self, key: str) -> Route:
        return (await self.shard_map()).route(shard_of_key(key))

    async def put(
        self, key: str, body: bytes, *, content_type: str, if_absent: bool = False
    ) -> bool:
        return await self._write_all(
            key, lambda store: store.put(key, body, content_type=content_type, if_absent=if_absent)
        )

    async def put_file(
        self, key: str, path: Path, *, content_type: str, if_absent: bool = False
    ) -> bool:
        return await self._write_all(
            key,
            lambda store: store.put_file(key, path, content_type=content_type, if_absent=if_absent),
        )

    async def _write_all(self, key: str, write: Callable[[BlobStore], Awaitable[bool]]) -> bool:
        """Write to every store the key's route writes (a migration's second copy
        included), the read store first: its answer is the caller's answer."""
        route = await self._route(key)
        stored = False
        for i, name in enumerate(route.writes):
            done = await write(self._store(name))
            if i == 0:
                stored = done
        return stored

    async def get(self, key: str) -> StoredObject:
        route = await self._route(key)
        return await self._store(route.read).get(key)

    async def head(self, key: str) -> ObjectInfo | None:
        route = await self._route(key)
        return await self._store(route.read).head(key)

    async def delete(self, key: str) -> None:
        route = await self._route(key)
        for name in route.writes:
            await self._store(name).delete(key)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every store's keys, merged in key order; from each store only the keys
        whose shard it serves reads for, so a migration's copies are not listed twice."""
        shard_map = await self.shard_map()
        heads: dict[str, tuple[ObjectInfo, AsyncIterator[ObjectInfo]]] = {}

        async def advance(name: str, it: AsyncIterator[ObjectInfo]) -> None:
            async for info in it:
                if shard_map.route(shard_of_key(info.key)).read == name:
                    heads[name] = (info, it)
                    return
            heads.pop(name, None)

        for name, store in sorted(self.stores.items()):
            await advance(name, aiter(store.list(prefix)))
        while heads:
            name = min(heads, key=lambda n: heads[n][0].key)
            info, it = heads[name]
            yield info
            await advance(name, it)

    async def ping(self) -> None:
        await asyncio.gather(*(store.ping() for store in self.stores.values()))
        await self.shard_map()

    async def close(self) -> None:
        for store in self.stores.values():
            await store.close()
