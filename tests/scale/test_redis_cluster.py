"""The edge with its hot cache and render lock on a real three-master Redis Cluster:
one render across processes, and a master killed mid-load costs cache hits on its
slots (storage serves them), never a 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

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
from tests.support.services import RedisClusterNodes, start_redis_cluster


@pytest.fixture
def cluster() -> Iterator[RedisClusterNodes]:
    nodes = start_redis_cluster(masters=3)
    yield nodes
    nodes.stop()


async def _key_count(port: int) -> int:
    client = Redis(port=port)
    try:
        return int(await client.dbsize())
    finally:
        await client.aclose()


async def test_two_edges_on_a_cluster_render_a_cold_variant_once(
    tmp_path: Path, cluster: RedisClusterNodes, session: aiohttp.ClientSession
) -> None:
    await assert_two_edges_render_once(tmp_path, cluster.url, session)


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
                f"{edge.url}/{preset}/{fan_out(image_id)}/{image_id}.{ext}"
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
        errors_before = redis_lookups("error")
        for round_no in range(12):
            if round_no == 3:
                victim.proc.kill()
                victim.proc.wait()
                hits_at_kill = redis_lookups("hit")
            replies = await asyncio.gather(*(get(session, u) for u in urls * 4))
            statuses += [status for status, _, _ in replies]
        assert set(statuses) == {200}, sorted(set(statuses))
        assert redis_lookups("error") > errors_before  # the dead master's keys fell back
        assert redis_lookups("hit") > hits_at_kill  # the survivors' keys kept hitting
        assert edge.renders == len(urls)  # fallback read storage, never re-rendered
