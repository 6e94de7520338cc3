"""The edge with a real Redis: one render across processes, and Redis outages
that cost latency but never a 5xx."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from pinhole.domain.keys import fan_out
from tests.support.edge import (
    assert_two_edges_render_once,
    edge_settings,
    get,
    redis_lookups,
    running_edge,
)
from tests.support.photos import load_photo
from tests.support.seed import seed_image
from tests.support.services import RedisServer, start_redis


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
            errors_before = redis_lookups("error")
            client = aioredis.Redis.from_url(redis.url)
            try:
                await client.client_pause(1500, all=True)
            finally:
                await client.aclose()
            replies = await asyncio.gather(*(get(session, u) for u in urls * 4))
            assert {status for status, _, _ in replies} == {200}
            assert redis_lookups("error") > errors_before
            await asyncio.sleep(1.6)  # unpaused; the pool reconnects by itself

            hits_before = redis_lookups("hit")
            statuses: list[int] = []
            for round_no in range(16):
                if round_no == 4:
                    redis.stop()
                    errors_at_stop = redis_lookups("error")
                replies = await asyncio.gather(*(get(session, u) for u in urls * 8))
                statuses += [status for status, _, _ in replies]
            assert set(statuses) == {200}, sorted(set(statuses))
            assert redis_lookups("hit") > hits_before
            assert redis_lookups("error") > errors_at_stop  # the outage was counted

            redis = start_redis(port)  # same port, empty: it refills and hits again
            hits_down = redis_lookups("hit")
            # Until a hit: one 0.2 s timeout missed on a loaded machine is a
            # storage read, the designed fallback, not a failure to heal.
            async with asyncio.timeout(30):
                while redis_lookups("hit") == hits_down:
                    for url in urls:
                        assert (await get(session, url))[0] == 200
            assert edge.renders == len(urls)  # storage kept the renders across the outage
    finally:
        redis.stop()
