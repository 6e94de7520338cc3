"""The edge with its hot cache and render lock on a real three-master Redis Cluster:
one render across processes, and a master killed mid-load costs cache hits on its
slots (storage serves them), never a 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tests.edge.harness import edge_settings, get, running_edge
from tests.edge.seed import seed_image
from tests.photos import load_photo
from tests.services import RedisClusterNodes, start_redis_cluster


@pytest.fixture
def cluster() -> Iterator[RedisClusterNodes]:
    nodes = start_redis_cluster(masters=3)
    yield nodes
    nodes.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        yield s


def _fan(image_id: str) -> str:
    return f"{image_id[0:2]}/{image_id[2:4]}/{image_id[4:6]}"


def _redis(result: str) -> float:
    value = REGISTRY.get_sample_value(
        "pinhole_cache_requests_total", {"tier": "redis", "result": result}
    )
    return value or 0.0


async def _key_count(port: int) -> int:
    client = Redis(port=port)
    try:
        return int(await client.dbsize())
    finally:
        await client.aclose()


async def test_two_edges_on_a_cluster_render_a_cold_variant_once(
    tmp_path: Path, cluster: RedisClusterNodes, session: aiohttp.ClientSession
) -> None:
    settings = edge_settings(tmp_path, cache=cluster.url)
    async with running_edge(settings) as a, running_edge(settings) as b:
        image_id = await seed_image(a.components.store, load_photo("autumn-2560x1600.jpg"))
        path = f"/474x/{_fan(image_id)}/{image_id}"
        results = await asyncio.gather(
            *(get(session, f"{edge.url}{path}", Accept="image/webp") for edge in (a, b) * 50)
        )
        assert {status for status, _, _ in results} == {200}
        assert len({body for _, _, body in results}) == 1
        assert a.renders + b.renders == 1


async def test_a_master_killed_mid_load_costs_hits_not_errors(
    tmp_path: Path, cluster: RedisClusterNodes, session: aiohttp.ClientSession
) -> None:
    # No L1: every request asks the cluster, so the dead master is felt on every one.
    settings = edge_settings(tmp_path, cache=cluster.url, l1_max_bytes=0)
    async with running_edge(settings) as edge:
        photos = ("autumn-2560x1600.jpg", "flow-dark-720x1440-portrait.jpg")
        urls = []
        for name in photos:
            image_id = await seed_image(edge.components.store, load_photo(name))
            urls += [
                f"{edge.url}/{preset}/{_fan(image_id)}/{image_id}.{ext}"
                for preset in ("236x", "474x", "736x")
                for ext in ("jpg", "webp")
            ]
        for url in urls:  # render each once and fill the cluster
            assert (await get(session, url))[0] == 200
        # Kill the master holding the most of these variants; the others keep some.
        held = {node.port: await _key_count(node.port) for node in cluster.nodes}
        victim = max(cluster.nodes, key=lambda node: held[node.port])
        assert held[victim.port] > 0
        assert sum(held.values()) > held[victim.port]

        statuses: list[int] = []
        errors_before = _redis("error")
        for round_no in range(12):
            if round_no == 3:
                victim.proc.kill()
                victim.proc.wait()
                hits_at_kill = _redis("hit")
            replies = await asyncio.gather(*(get(session, u) for u in urls * 4))
            statuses += [status for status, _, _ in replies]
        assert set(statuses) == {200}, sorted(set(statuses))
        assert _redis("error") > errors_before  # the dead master's keys fell back
        assert _redis("hit") > hits_at_kill  # the survivors' keys kept hitting
        assert edge.renders == len(urls)  # fallback read storage, never re-rendered
