"""The edge with a real Redis: one render across processes, and Redis outages
that cost latency but never a 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from pinhole.domain.keys import fan_out
from tests.edge.harness import assert_two_edges_render_once, edge_settings, get, running_edge
from tests.edge.seed import seed_image
from tests.photos import load_photo
from tests.services import RedisServer, start_redis


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        yield s


def _redis(result: str) -> float:
    value = REGISTRY.get_sample_value(
        "pinhole_cache_requests_total", {"tier": "redis", "result": result}
    )
    return value or 0.0


async def test_two_edge_processes_render_a_cold_variant_once(
    tmp_path: Path, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    await assert_two_edges_render_once(tmp_path, redis_server.url, session)


async def test_redis_stopped_mid_load_then_restarted(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    redis = start_redis()
    port = redis.port
    try:
        # No L1: every request asks Redis, so the outage is felt on every one.
        settings = edge_settings(tmp_path, cache=redis.url, l1_max_bytes=0)
        async with running_edge(settings) as edge:
            image_id = await seed_image(edge.components.store, load_photo("autumn-2560x1600.jpg"))
            urls = [
                f"{edge.url}/{preset}/{fan_out(image_id)}/{image_id}.jpg"
                for preset in ("236x", "474x", "736x")
            ]
            for url in urls:  # render and fill Redis
                assert (await get(session, url))[0] == 200
            # Slow: Redis holds every command for 1.5 s, past the 0.2 s timeout.
            errors_before = _redis("error")
            client = aioredis.Redis.from_url(redis.url)
            try:
                await client.client_pause(1500, all=True)
            finally:
                await client.aclose()
            replies = await asyncio.gather(*(get(session, u) for u in urls * 4))
            assert {status for status, _, _ in replies} == {200}
            assert _redis("error") > errors_before
            await asyncio.sleep(1.6)  # unpaused; the pool reconnects by itself

            hits_before = _redis("hit")
            statuses: list[int] = []
            for round_no in range(16):
                if round_no == 4:
                    redis.stop()
                    errors_at_stop = _redis("error")
                replies = await asyncio.gather(*(get(session, u) for u in urls * 8))
                statuses += [status for status, _, _ in replies]
            assert set(statuses) == {200}, sorted(set(statuses))
            assert _redis("hit") > hits_before
            assert _redis("error") > errors_at_stop  # the outage was counted

            redis = start_redis(port)  # same port, empty: it refills and hits again
            hits_down = _redis("hit")
            for _ in range(3):
                for url in urls:
                    assert (await get(session, url))[0] == 200
            assert _redis("hit") > hits_down
            assert edge.renders == len(urls)  # storage kept the renders across the outage
    finally:
        redis.stop()
