"""The shared hot-cache tier on Redis (redis.asyncio; hiredis parses when installed).

A cache that is down or slow must cost a request at most about its timeout, then
let it fall back to storage. So: short socket timeouts, no retry after a timeout
(it would double the cost of an outage, and storage is the fallback), an overall
deadline per call, and every failure surfaced as ``CacheUnavailable``.
Reconnecting is left to redis-py's pool, which replaces broken connections on
the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from pinhole.errors import CacheUnavailable

_T = TypeVar("_T")

# RedisError covers redis-py's ConnectionError and TimeoutError; OSError covers
# socket and TLS errors that escape untranslated, and the builtin TimeoutError
# that asyncio.timeout raises (asyncio.TimeoutError is the same class on 3.11+).
_FAILURES = (RedisError, OSError)


class RedisHotCache:
    """``HotCache`` over one Redis (``redis://`` or ``rediss://``)."""

    def __init__(self, client: Redis, *, deadline_seconds: float | None = None) -> None:
        """``deadline_seconds`` bounds a whole call, connect and health check
        included; socket timeouts alone bound each wait but not their sum."""
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisHotCache needs a client with decode_responses=False")
        self._client = client
        self._deadline = deadline_seconds

    @classmethod
    def from_url(cls, url: str, timeout_seconds: float) -> RedisHotCache:
        # A redis+cluster:// scheme would build a redis.asyncio.RedisCluster here.
        client = Redis.from_url(
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
        # Twice the socket timeout: a fresh connection may spend one timeout on
        # connect and the handshake and another on the command itself.
        return cls(client, deadline_seconds=2 * timeout_seconds)

    async def get(self, key: str) -> bytes | None:
        value = await self._call("GET", lambda: self._client.get(key))
        if isinstance(value, str):  # unreachable with decode_responses=False
            return value.encode()
        return value

    async def set(self, key: str, value: bytes, *, ttl_seconds: int) -> None:
        # Checked here, not left to Redis, so a caller bug is a ValueError rather
        # than a CacheUnavailable that a fallback path would silently swallow.
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be > 0, not {ttl_seconds}")
        await self._call("SET", lambda: self._client.set(key, value, ex=ttl_seconds))

    async def delete(self, *keys: str) -> None:
        if not keys:  # DEL with no keys is a Redis syntax error
            return
        await self._call("DEL", lambda: self._client.delete(*keys))

    async def ping(self) -> None:
        await self._call("PING", lambda: self._client.ping())

    async def close(self) -> None:
        await self._call("close", lambda: self._client.aclose())

    async def _call(self, op: str, command: Callable[[], Awaitable[_T]]) -> _T:
        try:
            async with asyncio.timeout(self._deadline):
                return await command()
        except _FAILURES as exc:
            # Not repr(exc): redis-py's reprs read like "network:ConnectionError".
            raise CacheUnavailable(f"redis {op} failed: {type(exc).__name__}: {exc}") from exc
