"""``RenderLock`` adapters (the Protocol is in ``pinhole.ports``): a cold variant is
rendered once, not once per edge process.

Redis ``SET lock:<key> <token> NX PX <ms>``; released with a compare-and-delete
script so a holder whose lock expired cannot release a successor's. Waiters poll
the cache tiers for the result. With an in-process cache there is one process
to coordinate, and the in-process single-flight is the whole story.

The client and the timeout rules are the hot cache's (``pinhole.cache.redis``),
so a ``redis+cluster://`` cache URL gives a lock on the cluster: the lock key and
the release script's one key live in one slot, on one master.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pinhole.cache.redis import (
    CLOSED_CONNECTION_RACES,
    FAILURES,
    RedisClient,
    bounded,
    client_from_url,
    cooldown_for,
    deadline_for,
)

_T = TypeVar("_T")

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


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
    def __init__(self, client: RedisClient, lock_ms: int, deadline_seconds: float) -> None:
        self._client = client
        self._lock_ms = lock_ms
        self._deadline = deadline_seconds
        self._cooldown = cooldown_for(client)

    @classmethod
    def from_url(cls, url: str, lock_ms: int, timeout_seconds: float) -> RedisRenderLock:
        return cls(client_from_url(url, timeout_seconds), lock_ms, deadline_for(timeout_seconds))

    @staticmethod
    def _name(key: str) -> str:
        return f"pinhole:render-lock:{key}"

    async def acquire(self, key: str) -> str | None:
        token = secrets.token_hex(16)
        name = self._name(key)
        ok = await self._call(
            name, lambda: self._client.set(name, token, nx=True, px=self._lock_ms)
        )
        return token if ok else None

    async def held(self, key: str) -> bool:
        name = self._name(key)
        return bool(await self._call(name, lambda: self._client.exists(name)))

    async def release(self, key: str, token: str) -> None:
        # On failure it expires by itself after lock_ms; waiters then find the result.
        name = self._name(key)
        await self._call(name, lambda: self._client.eval(_RELEASE, 1, name, token))

    async def _call(self, name: str, command: Callable[[], Awaitable[_T]]) -> _T:
        return await bounded(
            "render lock", self._deadline, command, keys=(name,), cooldown=self._cooldown
        )

    async def close(self) -> None:
        with contextlib.suppress(*FAILURES, *CLOSED_CONNECTION_RACES):
            await self._client.aclose()
