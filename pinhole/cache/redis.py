"""The shared hot-cache tier on Redis (redis.asyncio; hiredis parses when installed).

A cache that is down or slow must cost a request at most about its timeout, then
let it fall back to storage. So: short socket timeouts, no retry after a timeout
(it would double the cost of an outage, and storage is the fallback), an overall
deadline per call, and every failure surfaced as ``CacheUnavailable``.
Reconnecting is left to redis-py's pool, which replaces broken connections on
the next call.

One Redis (``redis://``, ``rediss://``) or a Redis Cluster (``redis+cluster://``,
see ``pinhole.cache.redis_cluster``): both clients take the same commands, so the
adapter and the edge's render lock share ``client_from_url`` and ``bounded``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pinhole.cache.redis_cluster import NodeCooldown, cluster_from_url, is_cluster_url
from pinhole.errors import CacheUnavailable

_T = TypeVar("_T")

RedisClient: TypeAlias = "Redis | RedisCluster"

# RedisError covers redis-py's ConnectionError and TimeoutError; OSError covers
# socket and TLS errors that escape untranslated, and the builtin TimeoutError
# that asyncio.timeout raises (asyncio.TimeoutError is the same class on 3.11+).
# The cluster client's own errors (no node reachable for a slot map, a slot not
# covered) derive from Exception, not RedisError.
FAILURES = (RedisError, RedisClusterException, OSError)
# redis-py 8.1's asyncio connections leak the transport's own errors when a peer
# closed the connection (or another task tore it down) just before a write:
# AttributeError ("'NoneType' object has no attribute 'writelines'") or
# TypeError, not ConnectionError (redis-py issues #3546 and #4287, fixed after
# 8.1). Seen here with a cluster master killed under load. They are connection
# failures, and the port promises CacheUnavailable for any failure.
CLOSED_CONNECTION_RACES = (AttributeError, TypeError)
_CONNECTION_FAILURES = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    *CLOSED_CONNECTION_RACES,
)


def client_from_url(url: str, timeout_seconds: float) -> RedisClient:
    """A client with the outage rules above, for one Redis or a cluster."""
    if is_cluster_url(url):
        return cluster_from_url(url, timeout_seconds)
    return Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        health_check_interval=30,
        retry_on_timeout=False,
        # One immediate retry on ConnectionError only. After Redis restarts, a
        # pooled socket fails on first use ("Connection closed by server":
        # the pool's staleness check misses it with hiredis), and a fresh
        # connect is cheap; a refused connect is too. Timeouts are never
        # retried. Spelled out because redis-py's defaults differ by
        # constructor (from_url: none; Redis(): 10 with backoff).
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


def deadline_for(timeout_seconds: float) -> float:
    # Twice the socket timeout: a fresh connection may spend one timeout on
    # connect and the handshake and another on the command itself (on a
    # cluster: one on the dead node, then one after reloading the slot map).
    return 2 * timeout_seconds


def cooldown_for(client: RedisClient) -> NodeCooldown | None:
    return NodeCooldown(client) if isinstance(client, RedisCluster) else None


async def bounded(
    what: str,
    deadline: float | None,
    command: Callable[[], Awaitable[_T]],
    *,
    keys: Sequence[str] = (),
    cooldown: NodeCooldown | None = None,
) -> _T:
    """Run one client call within ``deadline``; any failure is ``CacheUnavailable``.
    On a cluster, ``keys`` route the call through ``cooldown``."""
    if cooldown is not None:
        cooldown.check(keys)
    try:
        async with asyncio.timeout(deadline):
            result = await command()
    except (*FAILURES, *CLOSED_CONNECTION_RACES) as exc:
        if cooldown is not None and isinstance(exc, _CONNECTION_FAILURES):
            cooldown.failed(keys)
        # Not repr(exc): redis-py's reprs read like "network:ConnectionError".
        raise CacheUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
    if cooldown is not None:
        cooldown.succeeded(keys)
    return result


class RedisHotCache:
    """``HotCache`` over one Redis (``redis://``, ``rediss://``) or a cluster
    (``redis+cluster://host1:7000,host2:7001``)."""

    def __init__(self, client: RedisClient, *, deadline_seconds: float | None = None) -> None:
        """``deadline_seconds`` bounds a whole call, connect and health check
        included; socket timeouts alone bound each wait but not their sum."""
        if client.get_encoder().decode_responses:
            raise ValueError("RedisHotCache needs a client with decode_responses=False")
        self._client = client
        self._deadline = deadline_seconds
        self._cooldown = cooldown_for(client)

    @classmethod
    def from_url(cls, url: str, timeout_seconds: float) -> RedisHotCache:
        return cls(
            client_from_url(url, timeout_seconds), deadline_seconds=deadline_for(timeout_seconds)
        )

    async def get(self, key: str) -> bytes | None:
        value = await self._call("GET", lambda: self._client.get(key), key)
        if isinstance(value, str):  # unreachable with decode_responses=False
            return value.encode()
        return value

    async def set(self, key: str, value: bytes, *, ttl_seconds: int) -> None:
        # Checked here, not left to Redis, so a caller bug is a ValueError rather
        # than a CacheUnavailable that a fallback path would silently swallow.
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be > 0, not {ttl_seconds}")
        await self._call("SET", lambda: self._client.set(key, value, ex=ttl_seconds), key)

    async def delete(self, *keys: str) -> None:
        if not keys:  # DEL with no keys is a Redis syntax error
            return
        await self._call("DEL", lambda: self._client.delete(*keys), *keys)

    async def ping(self) -> None:
        await self._call("PING", lambda: self._client.ping())

    async def close(self) -> None:
        await self._call("close", lambda: self._client.aclose())

    async def _call(self, op: str, command: Callable[[], Awaitable[_T]], *keys: str) -> _T:
        return await bounded(
            f"redis {op} failed", self._deadline, command, keys=keys, cooldown=self._cooldown
        )
