"""One RateLimiter contract, run against every adapter (memory, Redis, Redis
Cluster), and what a rate limit does when its Redis stops answering.

The outage test starts a Redis of its own and stops it with SIGSTOP: its
connections hang, as in a network split, which is the slow failure (a refused
connection is the fast one). The gate must let requests through within the
cache's short deadline, count them as failed open, and count again once Redis
is back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from pinhole.cache.rate_limit import MemoryRateLimiter, RedisRateLimiter
from pinhole.errors import CacheUnavailable, RateLimitExceeded
from pinhole.ports import RateLimiter
from pinhole.rate_limits import UPLOADS, RateLimitGate
from pinhole.settings import RateLimits
from tests.support.services import RedisClusterNodes, RedisServer, start_redis

CONTRACT_TIMEOUT = 5.0
# The production cache timeout, and a bound that means "does not hang" (four
# times a call's deadline), not a benchmark.
TIMEOUT = 0.25
NO_HANG = 2.0


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    adapter: RateLimiter
    if request.param == "memory":
        adapter = MemoryRateLimiter()
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        adapter = RedisRateLimiter.from_url(server.url, CONTRACT_TIMEOUT)
    else:
        cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        adapter = RedisRateLimiter.from_url(cluster.url, CONTRACT_TIMEOUT)
    yield adapter
    await adapter.close()


def _key() -> str:
    return f"contract:{uuid.uuid4().hex}"


async def test_hits_count_up_within_one_window(limiter: RateLimiter) -> None:
    key = _key()
    counts = [await limiter.hit(key, 60) for _ in range(3)]
    assert [c.count for c in counts] == [1, 2, 3]
    assert all(0 < c.reset_seconds <= 60 for c in counts)
    # The window does not move with each hit: it ends where the first one put it.
    assert counts[2].reset_seconds <= counts[0].reset_seconds
    assert (await limiter.hit(_key(), 60)).count == 1


async def test_concurrent_hits_are_each_counted_once(limiter: RateLimiter) -> None:
    key = _key()
    # The first call of a cluster client loads its slot map, and connections open
    # on first contact: the contract is about counting, so that is done first.
    await limiter.hit(key, 60)
    counts = await asyncio.gather(*(limiter.hit(key, 60) for _ in range(50)))
    assert sorted(c.count for c in counts) == list(range(2, 52))


async def test_a_window_ends_and_the_count_starts_again(limiter: RateLimiter) -> None:
    key = _key()
    await limiter.hit(key, 0.2)
    await limiter.hit(key, 0.2)
    await asyncio.sleep(0.4)
    assert (await limiter.hit(key, 0.2)).count == 1


async def test_a_window_must_be_positive(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        await limiter.hit(_key(), 0)


async def test_ping(limiter: RateLimiter) -> None:
    await limiter.ping()


def _failed_open() -> float:
    value = REGISTRY.get_sample_value(
        "pinhole_rate_limit_requests_total",
        {"limit": "uploads-per-token", "outcome": "failed-open"},
    )
    return value or 0.0


async def test_a_stopped_redis_fails_open_within_the_deadline_then_limits_again() -> None:
    server = start_redis()
    limiter = RedisRateLimiter.from_url(server.url, TIMEOUT)
    gate = RateLimitGate(limiter, RateLimits(uploads_per_token=2), cooldown_seconds=0.5)
    token = uuid.uuid4().hex
    try:
        await gate.check(UPLOADS, token=token)
        os.kill(server.proc.pid, signal.SIGSTOP)
        with pytest.raises(CacheUnavailable):
            await asyncio.wait_for(limiter.hit("probe", 60), NO_HANG)
        before = _failed_open()
        # Over the quota of 2, and still let through: the counts cannot be read.
        for _ in range(4):
            assert await asyncio.wait_for(gate.check(UPLOADS, token=token), NO_HANG) == {}
        assert _failed_open() == before + 4
        os.kill(server.proc.pid, signal.SIGCONT)
        await asyncio.sleep(0.6)  # past the cooldown: the next request asks Redis again
        async with asyncio.timeout(10):
            while True:
                headers = await gate.check(UPLOADS, token=token)
                if headers:
                    break  # counted again (the first after SIGCONT may still time out)
                await asyncio.sleep(0.6)
        # Redis kept its count across the pause: the quota holds again.
        with pytest.raises(RateLimitExceeded):
            await gate.check(UPLOADS, token=token)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        await limiter.close()
        server.stop()


async def test_a_redis_that_is_gone_fails_open_too() -> None:
    server = start_redis()
    limiter = RedisRateLimiter.from_url(server.url, TIMEOUT)
    gate = RateLimitGate(limiter, RateLimits(uploads_per_token=1))
    try:
        server.stop()
        before = _failed_open()
        for _ in range(3):
            assert await asyncio.wait_for(gate.check(UPLOADS, token="gone"), NO_HANG) == {}
        assert _failed_open() == before + 3
    finally:
        await limiter.close()
