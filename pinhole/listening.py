"""Reading the events topic for as long as a process lives: the loop every event
listener shares (the edge's and cdn-purge's delete listener, each webhook
endpoint's dispatcher).

A group with no committed offset starts at the newest event (a listener wants
what happens from now on; history is ``GET /v1/events``); on a resubscribe the
group's committed offset wins, so nothing is skipped. Each delivery is acked
once ``handle`` returns, so what was in hand at a crash or a stop is handled
again: handlers are idempotent. A broker outage, or any failure of ``handle``,
is logged and the listener subscribes again; it never ends but by cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pinhole.errors import QueueUnavailable
from pinhole.ports import JobQueue, Message
from pinhole.retry import retry_transient

log = logging.getLogger("pinhole.events")

RESUBSCRIBE_PAUSE_SECONDS = 1.0


async def listen(
    queue: JobQueue,
    topic: str,
    group: str,
    handle: Callable[[Message], Awaitable[None]],
    *,
    who: str,
    listening: str,
    subscribed: asyncio.Event | None = None,
    pause_seconds: float = RESUBSCRIBE_PAUSE_SECONDS,
) -> None:
    """Hand every message of ``topic`` to ``handle``, in ``group``, until cancelled.
    The first subscription logs ``listening`` and sets ``subscribed``; after a
    failure (logged as ``who`` failing) it waits ``pause_seconds`` to subscribe again."""
    first = True
    while True:
        try:
            subscription = await retry_transient(
                lambda: queue.subscribe(topic, group, start="latest"),
                what="subscribe to image events",
                cap_seconds=5.0,
            )
            try:
                if first:
                    log.info(listening, extra={"topic": topic, "group": group})
                first = False
                if subscribed is not None:
                    subscribed.set()
                async for delivery in subscription:
                    await handle(delivery.message)
                    with contextlib.suppress(QueueUnavailable):
                        await delivery.ack()
            finally:
                await subscription.close()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the process must outlive its listener
            log.warning(f"{who} failed; subscribing again", extra={"error": repr(err)})
        await asyncio.sleep(pause_seconds)
