"""Hot-path counting: summed in plain floats, pushed into prometheus-client in batches.

With ``serve --workers N`` prometheus-client runs in multiprocess mode, where
every ``inc()``/``observe()`` takes a lock, checks the pid and writes a
memory-mapped file. An L1 hit made five such writes (request count, latency sum
and bucket, bytes served, cache hit): a measurable share of the edge's CPU per
request. The wrappers here only add to floats; ``flush()`` pushes the sums into
the real children. ``/metrics`` flushes its own process before it renders, and
every process flushes each ``FLUSH_SECONDS`` (see ``flush_periodically``), so
another worker's counts are at most that far behind a scrape.

Only for code on the event loop's thread: the sums are unsynchronised floats.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web
from prometheus_client import Counter, Histogram

FLUSH_SECONDS = 1.0


class _Pending(Protocol):
    def flush(self) -> None: ...


# Every wrapper ever made: they are bound once per fixed label set, so this stays small.
_ALL: list[_Pending] = []


class HotCounter:
    __slots__ = ("_child", "_pending")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self._pending = 0.0
        _ALL.append(self)

    def inc(self, amount: float = 1.0) -> None:
        self._pending += amount

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0.0
            self._child.inc(pending)


class HotHistogram:
    """Per-bucket counts and a sum, written into the child's own bucket and sum values.

    prometheus-client has no public batch observe, so this uses the child's
    ``_upper_bounds``, ``_buckets`` and ``_sum`` (locked version;
    tests/unit/test_hot_metrics.py checks the result equals plain ``observe``).
    """

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        _ALL.append(self)

    def observe(self, amount: float) -> None:
        self._sum += amount
        # The first bucket whose bound is >= amount, as Histogram.observe picks;
        # the last bound is +Inf, so every amount lands somewhere.
        self._counts[bisect_left(self._bounds, amount)] += 1

    def flush(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        self._counts = [0] * len(counts)
        total, self._sum = self._sum, 0.0
        child = self._child
        child._sum.inc(total)
        for bucket, count in zip(child._buckets, counts, strict=True):
            if count:
                bucket.inc(count)


def flush() -> None:
    """Push every pending count into prometheus-client (before reading or rendering it)."""
    for pending in _ALL:
        pending.flush()


async def flush_periodically(_app: web.Application) -> AsyncIterator[None]:
    """For ``cleanup_ctx``: flush every ``FLUSH_SECONDS`` while the app runs, and at the end."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            flush()

    task = asyncio.create_task(loop(), name="metrics-flush")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        flush()
