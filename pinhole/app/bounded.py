"""Bounded concurrency for the operator commands (import, reconcile, migrate).

A fixed pool of workers draws from a small backlog, so at most ``concurrency``
items are in flight and a lazy listing is read only as fast as it is handled.
A failing worker cancels the rest (and the listing), and the error propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import TypeVar

_T = TypeVar("_T")


async def for_each(
    items: Iterable[_T] | AsyncIterable[_T],
    handle: Callable[[_T], Awaitable[None]],
    concurrency: int,
) -> None:
    """``handle`` every item, at most ``concurrency`` (at least one) at a time."""
    workers_wanted = max(1, concurrency)
    backlog: asyncio.Queue[tuple[_T] | None] = asyncio.Queue(maxsize=workers_wanted * 2)

    async def worker() -> None:
        while (item := await backlog.get()) is not None:
            await handle(item[0])

    async with asyncio.TaskGroup() as group:
        workers = [group.create_task(worker()) for _ in range(workers_wanted)]
        if isinstance(items, AsyncIterable):
            async for item in items:
                await backlog.put((item,))
        else:
            for item in items:
                await backlog.put((item,))
        for _ in workers:
            await backlog.put(None)


class Watermark:
    """The furthest item of an ordered sequence up to which every item is done,
    when items finish out of order: where a resumable command may restart."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._done = [False] * count
        self._next = 0  # the first index not yet known done

    def done(self, index: int) -> int:
        """Mark ``index`` done; how many items, from the start, are now all done."""
        self._done[index] = True
        while self._next < self._count and self._done[self._next]:
            self._next += 1
        return self._next
