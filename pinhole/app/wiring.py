"""Build adapters from settings. The only module that knows every adapter.

Backends are chosen by URL scheme; imports are local so a process only loads
the vendor clients it uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pinhole.ports import BlobStore, HotCache, JobQueue, RateLimiter, RecordStore
from pinhole.settings import S3, Cache, Kafka, RecordShards, Settings, Sharding

if TYPE_CHECKING:
    from pinhole.records.sharded import ShardedRecordStore
    from pinhole.records.sql import SqlRecordStore
    from storage.sharded import ShardedBlobStore


class UnsupportedBackend(ValueError):
    """The URL's scheme names no adapter we have."""


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def _build_adapter(url: str, s3: S3 | None = None) -> BlobStore:
    scheme = _scheme(url)
    if scheme == "file":
        from storage.fs import FsBlobStore

        return FsBlobStore.from_url(url)
    if scheme == "s3":
        from storage.s3 import S3BlobStore

        return S3BlobStore.from_url(url, s3)
    raise UnsupportedBackend(f"storage URL scheme {scheme!r} (use file:// or s3://)")


def build_sharded_store(url: str, sharding: Sharding, s3: S3 | None = None) -> ShardedBlobStore:
    """``url`` is the store named "default"; ``sharding.stores`` names the others."""
    from pinhole.sharding import DEFAULT_STORE, seed_map
    from storage.sharded import ShardedBlobStore

    stores = {DEFAULT_STORE: _build_adapter(url, s3)}
    stores.update({name: _build_adapter(u, s3) for name, u in sharding.stores.items()})
    return ShardedBlobStore(
        stores,
        seed_map(sharding.map, sharding.stores),
        refresh_seconds=sharding.refresh_seconds,
    )


def build_blob_store(url: str, sharding: Sharding | None = None, s3: S3 | None = None) -> BlobStore:
    """One store, or a shard-routing store when ``sharding`` names other stores;
    ``s3`` bounds every S3 request (its defaults when not given)."""
    from storage.instrumented import InstrumentedBlobStore

    if sharding is not None and sharding.stores:
        return InstrumentedBlobStore(build_sharded_store(url, sharding, s3))
    return InstrumentedBlobStore(_build_adapter(url, s3))


def build_job_queue(url: str, kafka: Kafka) -> JobQueue:
    scheme = _scheme(url)
    if scheme == "memory":
        from pinhole.queue.memory import MemoryJobQueue

        return MemoryJobQueue()
    if scheme == "kafka":
        from pinhole.queue.kafka import KafkaJobQueue

        return KafkaJobQueue.from_url(url, kafka)
    raise UnsupportedBackend(f"queue URL scheme {scheme!r} (use memory:// or kafka://)")


def build_hot_cache(url: str, cache: Cache) -> HotCache:
    scheme = _scheme(url)
    if scheme == "memory":
        from pinhole.cache.memory import MemoryHotCache

        return MemoryHotCache(cache.l1_max_bytes, cache.max_object_bytes)
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        from pinhole.cache.redis import RedisHotCache

        return RedisHotCache.from_url(url, cache.timeout_seconds)
    raise UnsupportedBackend(
        f"cache URL scheme {scheme!r} (use memory://, redis:// or redis+cluster://)"
    )


def build_rate_limiter(url: str, cache: Cache) -> RateLimiter:
    """The rate limits' counters live where the hot cache does: Redis (or a
    cluster) counts for every process, ``memory://`` for this one."""
    scheme = _scheme(url)
    if scheme == "memory":
        from pinhole.cache.rate_limit import MemoryRateLimiter

        return MemoryRateLimiter()
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        from pinhole.cache.rate_limit import RedisRateLimiter

        return RedisRateLimiter.from_url(url, cache.timeout_seconds)
    raise UnsupportedBackend(
        f"cache URL scheme {scheme!r} (use memory://, redis:// or redis+cluster://)"
    )


def _build_record_server(url: str, name: str, shards: RecordShards) -> SqlRecordStore:
    scheme = _scheme(url)
    if scheme == "sqlite":
        from pinhole.records.sqlite import SqliteRecordStore

        return SqliteRecordStore.from_url(url, name=name, timeout_seconds=shards.timeout_seconds)
    if scheme in ("mysql", "mariadb"):
        from pinhole.records.mariadb import MariaDbRecordStore

        return MariaDbRecordStore.from_url(
            url,
            name=name,
            connect_timeout_seconds=shards.connect_timeout_seconds,
            timeout_seconds=shards.timeout_seconds,
            max_connections=shards.max_connections,
        )
    raise UnsupportedBackend(
        f"record store URL scheme {scheme!r} (use sqlite:///path or mysql://host/db)"
    )


def build_record_servers(url: str, shards: RecordShards) -> dict[str, SqlRecordStore]:
    """Every record shard server by name ("default" is ``url``): what ``pinhole db
    upgrade`` walks."""
    from pinhole.sharding import DEFAULT_STORE

    servers = {DEFAULT_STORE: _build_record_server(url, DEFAULT_STORE, shards)}
    servers.update(
        {name: _build_record_server(u, name, shards) for name, u in shards.servers.items()}
    )
    return servers


def build_sharded_record_store(url: str, shards: RecordShards) -> ShardedRecordStore:
    """Every server behind the live record shard map (what ``pinhole db migrate``
    moves shards with), even when only "default" is configured."""
    from pinhole.records.sharded import ShardedRecordStore
    from pinhole.sharding import seed_map

    return ShardedRecordStore(
        build_record_servers(url, shards),
        seed_map(shards.map, shards.servers),
        refresh_seconds=shards.refresh_seconds,
    )


def build_record_store(url: str, shards: RecordShards) -> RecordStore:
    """One server, or a shard-routing store when ``shards`` names other servers."""
    if not shards.servers:
        return build_record_servers(url, shards)["default"]
    return build_sharded_record_store(url, shards)


@dataclass
class Components:
    store: BlobStore
    queue: JobQueue
    cache: HotCache

    async def close(self) -> None:
        await self.queue.close()
        await self.cache.close()
        await self.store.close()


def build_components(settings: Settings, queue: JobQueue | None = None) -> Components:
    """``queue`` lets ``pinhole up`` share one in-process queue between its services."""
    return Components(
        store=build_blob_store(settings.storage, settings.sharding, settings.s3),
        queue=queue or build_job_queue(settings.queue, settings.kafka),
        cache=build_hot_cache(settings.cache, settings.hot_cache),
    )
