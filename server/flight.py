"""In-process single-flight: concurrent callers for one key share one call.

The first caller runs the work; the others await its future. A follower that is
cancelled does not cancel the leader (``shield``), and a failure reaches every
caller that shared it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

_T = TypeVar("_T")


class SingleFlight(Generic[_T]):
    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[_T]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    async def run(self, key: str, work: Callable[[], Awaitable[_T]]) -> _T:
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await work()
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            # Followers re-raise it; retrieve it here so an unshared failure is not logged twice.
            future.exception()
            raise
        finally:
            del self._inflight[key]
