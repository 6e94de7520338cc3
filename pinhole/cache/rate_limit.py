"""``RateLimiter`` adapters (the Protocol is in ``pinhole.ports``): fixed-window
request counters, in Redis for every process at once, or in this process.

A fixed window per key, opened by the key's first hit: one ``INCR`` and, on
the first hit, a ``PEXPIRE``, in one Lua script so a crash between the two can
never leave a counter without an expiry (a key with none is given one again).
One key per call, so it works unchanged on Redis Cluster: the script's one key
lives on one master. A window that starts at each subject's first request,
rather than on the clock's minute, spreads resets out instead of letting every
limited client come back in the same second.

The client and the outage rules are the hot cache's (``pinhole.cache.redis``):
short socket timeouts, an overall deadline, every failure ``CacheUnavailable``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from pinhole.cache.redis import (
    CLOSED_CONNECTION_RACES,
    FAILURES,
    RedisClient,
    bounded,
    client_from_url,
    cooldown_for,
    deadline_for,
)
from pinhole.errors import CacheUnavailable
from pinhole.ports import WindowCount

_HIT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

KEY_PREFIX = "pinhole:rate:"


def _window_ms(window_seconds: float) -> int:
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be > 0, not {window_seconds}")
    return max(1, math.ceil(window_seconds * 1000))


class RedisRateLimiter:
    """Counters in one Redis or a Redis Cluster, shared by every process."""

    def __init__(self, client: RedisClient, deadline_seconds: float) -> None:
        self._client = client
        self._deadline = deadline_seconds
        self._cooldown = cooldown_for(client)

    @classmethod
    def from_url(cls, url: str, timeout_seconds: float) -> RedisRateLimiter:
        return cls(client_from_url(url, timeout_seconds), deadline_for(timeout_seconds))

    async def hit(self, key: str, window_seconds: float) -> WindowCount:
        window_ms = _window_ms(window_seconds)
        name = KEY_PREFIX + key
        reply = await bounded(
            "rate limiter",
            self._deadline,
            lambda: self._client.eval(_HIT, 1, name, window_ms),
            keys=(name,),
            cooldown=self._cooldown,
        )
        try:
            count, ttl_ms = int(reply[0]), int(reply[1])
        except (TypeError, ValueError, IndexError) as exc:
            raise CacheUnavailable(f"rate limiter: unexpected reply {reply!r}") from exc
        return WindowCount(count, ttl_ms / 1000)

    async def ping(self) -> None:
        await bounded("rate limiter ping", self._deadline, lambda: self._client.ping())

    async def close(self) -> None:
        with contextlib.suppress(*FAILURES, *CLOSED_CONNECTION_RACES):
            await self._client.aclose()


class _Window:
    __slots__ = ("count", "ends")

    def __init__(self, ends: float) -> None:
        self.count = 0
        self.ends = ends


class MemoryRateLimiter:
    """Counters in this process (``pinhole up``, and an in-process cache).

    Keys are kept in the order their windows opened. Every caller passes the
    same window (``rate_limits.window_seconds``), so that is also the order
    they end in: expired windows are dropped from the front, O(1) amortised.
    ``max_keys`` bounds memory against a flood of distinct subjects (IPv6
    addresses are cheap); beyond it the oldest windows are forgotten, which
    only restarts their counts. Never awaits, so needs no lock.
    """

    def __init__(
        self, max_keys: int = 100_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys <= 0:
            raise ValueError(f"max_keys must be > 0, not {max_keys}")
        self._max_keys = max_keys
        self._clock = clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    async def hit(self, key: str, window_seconds: float) -> WindowCount:
        _window_ms(window_seconds)
        now = self._clock()
        while self._windows:
            first = next(iter(self._windows.values()))
            if first.ends > now:
                break
            self._windows.popitem(last=False)
        window = self._windows.get(key)
        if window is None or window.ends <= now:
            self._windows.pop(key, None)
            window = self._windows[key] = _Window(now + window_seconds)
            while len(self._windows) > self._max_keys:
                self._windows.popitem(last=False)
        window.count += 1
        return WindowCount(window.count, window.ends - now)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._windows.clear()
