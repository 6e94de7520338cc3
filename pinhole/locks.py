"""A lock held in the blob store: one object, created with a conditional put.

For rare, short critical sections between processes that share nothing but the
store (the sweep of an image against a re-upload of the same bytes). The lock
object names its holder and when it lapses; a holder that died leaves a lock
that the next taker breaks once it has lapsed, so a crash costs at most
``lease_seconds`` of waiting, never a lock held for ever.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pinhole.errors import ObjectNotFound, ServiceUnavailable
from pinhole.ports import BlobStore

_JSON = "application/json"
# After breaking a lapsed lock: longer than a put takes, so a second breaker's
# write has landed (and is seen) before the first goes on.
_SETTLE_SECONDS = 0.2


async def _read(store: BlobStore, key: str) -> dict[str, object]:
    try:
        body = json.loads((await store.get(key)).body)
    except ObjectNotFound:
        return {}
    except ValueError:  # a torn or foreign body: as good as lapsed
        return {"until": 0}
    return body if isinstance(body, dict) else {"until": 0}


def _lapsed(held: dict[str, object], now: float) -> bool:
    until = held.get("until", 0)
    return not isinstance(until, int | float) or until < now


@asynccontextmanager
async def held(
    store: BlobStore, key: str, *, lease_seconds: float = 30.0, wait_seconds: float = 10.0
) -> AsyncIterator[None]:
    """Hold the lock at ``key`` for the body. Waits up to ``wait_seconds`` for
    another holder, then raises ``ServiceUnavailable`` (a 503 with Retry-After).
    The body must finish within ``lease_seconds``; storage errors propagate."""
    token = secrets.token_hex(8)
    deadline = time.monotonic() + wait_seconds
    delay = 0.02
    while True:
        body = json.dumps({"token": token, "until": time.time() + lease_seconds}).encode()
        if await store.put(key, body, content_type=_JSON, if_absent=True):
            broke = False
        elif _lapsed(await _read(store, key), time.time()):
            # A dead holder's lock. Two takers may break it at once and each
            # then win its own conditional put in turn; each checks after a
            # pause that the lock still names it, so only the last one goes on.
            await store.delete(key)
            if not await store.put(key, body, content_type=_JSON, if_absent=True):
                continue
            broke = True
        else:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    "Another operation on this image is under way; retry shortly."
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            continue
        if broke:
            await asyncio.sleep(_SETTLE_SECONDS)
            if (await _read(store, key)).get("token") != token:
                continue
        break
    try:
        yield
    finally:
        if (await _read(store, key)).get("token") == token:
            await store.delete(key)
