"""An edge app on a real loopback socket, built by the same runtime code as
`pinhole serve`, over real storage (a local directory) and an optional real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from multidict import CIMultiDict
from prometheus_client import REGISTRY

from pinhole.app.runtime import build_edge_app
from pinhole.app.wiring import Components, build_components
from pinhole.domain.keys import fan_out
from pinhole.settings import Cache, Edge, Settings
from server.app import EDGE_KEY, EdgeState
from tests.support.apps import PinholeTestServer
from tests.support.photos import load_photo
from tests.support.seed import seed_image


@dataclass
class RunningEdge:
    server: PinholeTestServer
    components: Components

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def state(self) -> EdgeState:
        return self.server.app[EDGE_KEY]

    @property
    def renders(self) -> int:
        return self.state.renderer.renders


# Short, for the tests of a slow or dead Redis. Tests of what the cache or the
# render lock does pass a longer one: on a loaded machine a missed 0.2 s turns a
# lock into an unlocked render, which is the designed fallback, not the subject.
OUTAGE_TIMEOUT = 0.2
SEMANTIC_TIMEOUT = 5.0


def edge_settings(
    root: Path,
    cache: str = "memory://",
    l1_max_bytes: int = 64 * 1024 * 1024,
    cache_timeout: float = OUTAGE_TIMEOUT,
    **edge: object,
) -> Settings:
    return Settings(
        storage=f"file://{root}",
        queue="memory://",
        cache=cache,
        hot_cache=Cache(timeout_seconds=cache_timeout, l1_max_bytes=l1_max_bytes),
        edge=Edge(**edge),  # type: ignore[arg-type]
    )


def redis_lookups(result: str) -> float:
    """This process's count of Redis-tier lookups ending in ``result`` (hit, miss, error)."""
    value = REGISTRY.get_sample_value(
        "pinhole_cache_requests_total", {"tier": "redis", "result": result}
    )
    return value or 0.0


@contextlib.asynccontextmanager
async def running_edge(settings: Settings) -> AsyncIterator[RunningEdge]:
    components = build_components(settings)
    server = PinholeTestServer(build_edge_app(settings, components), host="127.0.0.1")
    await server.start_server()
    try:
        yield RunningEdge(server, components)
    finally:
        await server.close()


async def get(
    session: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, CIMultiDict[str], bytes]:
    async with session.get(url, headers=headers) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


async def assert_two_edges_render_once(
    tmp_path: Path, cache_url: str, session: aiohttp.ClientSession
) -> None:
    """Two edges with their own L1 and in-process flights, sharing storage and the
    cache at ``cache_url``, stand in for two processes: 100 concurrent requests
    for one cold variant get identical 200s, and only the shared render lock can
    keep it to one render."""
    settings = edge_settings(tmp_path, cache=cache_url, cache_timeout=SEMANTIC_TIMEOUT)
    async with running_edge(settings) as a, running_edge(settings) as b:
        image_id = await seed_image(a.components.store, load_photo("autumn-2560x1600.jpg"))
        path = f"/474x/{fan_out(image_id)}/{image_id}"
        results = await asyncio.gather(
            *(get(session, f"{edge.url}{path}", Accept="image/webp") for edge in (a, b) * 50)
        )
        refused = [(status, body[:200]) for status, _, body in results if status != 200]
        assert not refused, refused
        assert len({body for _, _, body in results}) == 1
        assert a.renders + b.renders == 1
