"""Capped exponential backoff with full jitter, for transient dependency errors."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pinhole.errors import TransientError

T = TypeVar("T")
log = logging.getLogger("pinhole.retry")


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    base_seconds: float = 0.2,
    cap_seconds: float = 10.0,
    attempts: int | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``operation`` until it succeeds, retrying only ``TransientError``.

    ``attempts=None`` retries until cancelled: a worker must not move past a
    job because storage blinked, and shutdown cancels the wait.
    """
    attempt = 0
    while True:
        try:
            return await operation()
        except TransientError as exc:
            attempt += 1
            if attempts is not None and attempt >= attempts:
                raise
            delay = random.uniform(0, min(cap_seconds, base_seconds * 2**attempt))
            log.warning(
                "transient failure; retrying",
                extra={
                    "what": what,
                    "attempt": attempt,
                    "delay": round(delay, 3),
                    "error": str(exc),
                },
            )
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(delay)
