"""The stack every cdn/ suite runs against: a real `pinhole serve` origin with
real nginx and varnish in front, one per test module.

The origin runs with no hot cache of its own (L1 off, no Redis), so once an
image's objects are deleted it answers 404 at once: every HIT is the CDN's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from pinhole.domain.ids import ImageId
from pinhole.domain.manifest import Status
from pinhole.wiring import build_blob_store
from tests.cdn.edges import EdgeCache, start_nginx, start_varnish
from tests.e2e.processes import PinholeProcess, start_pinhole
from tests.edge.seed import seed_image
from tests.photos import load_photo


@dataclass
class Stack:
    root: Path
    origin: PinholeProcess
    caches: dict[str, EdgeCache]
    images: list[ImageId]


async def _seed(root: Path) -> list[ImageId]:
    store = build_blob_store(f"file://{root}")
    try:
        return [
            await seed_image(store, load_photo("autumn-2560x1600.jpg")),
            await seed_image(store, load_photo("pastelhills-3200x2000.jpg")),
            await seed_image(store, load_photo("flow-dark-720x1440-portrait.jpg")),
            await seed_image(store, load_photo("kay-dark-1080x1920-alpha.png"), Status.PENDING),
            await seed_image(store, load_photo("flow-5120x2880.jpg")),
        ]
    finally:
        await store.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("cdn-storage")
    logs = tmp_path_factory.mktemp("cdn-logs")
    images = asyncio.run(_seed(root))
    env = {
        "PINHOLE_STORAGE": f"file://{root}",
        "PINHOLE_CACHE": "memory://",
        "PINHOLE_HOT_CACHE__L1_MAX_BYTES": "0",
    }
    origin = start_pinhole("serve", env, logs)
    caches: dict[str, EdgeCache] = {}
    try:
        caches["nginx"] = start_nginx(origin.port, tmp_path_factory.mktemp("nginx"))
        caches["varnish"] = start_varnish(origin.port, tmp_path_factory.mktemp("varnish"))
        yield Stack(root, origin, caches, images)
    finally:
        for cache in caches.values():
            cache.stop()
        origin.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


def variant_path_of(image_id: str, preset: str = "236x", ext: str = "") -> str:
    fan = f"{image_id[0:2]}/{image_id[2:4]}/{image_id[4:6]}"
    return f"/{preset}/{fan}/{image_id}{ext}"


async def cdn_get(
    session: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, str, str, bytes, str]:
    """status, X-Cache-Status, Content-Type, body, ETag"""
    async with session.get(url, headers=headers) as resp:
        body = await resp.read()
        return (
            resp.status,
            resp.headers.get("X-Cache-Status", ""),
            resp.headers.get("Content-Type", ""),
            body,
            resp.headers.get("ETag", ""),
        )
