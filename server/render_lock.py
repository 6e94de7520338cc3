"""A lock across edge processes so a cold variant is rendered once, not once per process.

Redis ``SET lock:<key> <token> NX PX <ms>``; released with a compare-and-delete
script so a holder whose lock expired cannot release a successor's. Waiters poll
the cache tiers for the result. With an in-process cache there is one process
to coordinate, and the in-process single-flight is the whole story.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from pinhole.errors import CacheUnavailable

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class RenderLock(Protocol):
    async def acquire(self, key: str) -> str | None:
        """A token if this caller now holds the lock, ``None`` if another does.
        ``CacheUnavailable`` if the lock service cannot answer."""
        ...

    async def held(self, key: str) -> bool: ...

    async def release(self, key: str, token: str) -> None: ...

    async def close(self) -> None: ...


class LocalRenderLock:
    """One process: always granted; the single-flight already serialises renders."""

    async def acquire(self, key: str) -> str | None:
        return "local"

    async def held(self, key: str) -> bool:
        return False

    async def release(self, key: str, token: str) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisRenderLock:
    def __init__(self, client: Redis, lock_ms: int, deadline_seconds: float) -> None:
        self._client = client
        self._lock_ms = lock_ms
        self._deadline = deadline_seconds

    @classmethod
    def from_url(cls, url: str, lock_ms: int, timeout_seconds: float) -> RedisRenderLock:
        client = Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry_on_timeout=False,
        )
        return cls(client, lock_ms, 2 * timeout_seconds)

    @staticmethod
    def _name(key: str) -> str:
        return f"pinhole:render-lock:{key}"

    async def acquire(self, key: str) -> str | None:
        token = secrets.token_hex(16)
        try:
            async with asyncio.timeout(self._deadline):
                ok = await self._client.set(self._name(key), token, nx=True, px=self._lock_ms)
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"render lock: {type(exc).__name__}: {exc}") from exc
        return token if ok else None

    async def held(self, key: str) -> bool:
        try:
            async with asyncio.timeout(self._deadline):
                return bool(await self._client.exists(self._name(key)))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"render lock: {type(exc).__name__}: {exc}") from exc

    async def release(self, key: str, token: str) -> None:
        try:
            async with asyncio.timeout(self._deadline):
                await self._client.eval(_RELEASE, 1, self._name(key), token)
        except (RedisError, OSError) as exc:
            # It expires by itself after lock_ms; waiters then find the result.
            raise CacheUnavailable(f"render lock: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
