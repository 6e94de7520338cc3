"""Stable URLs by alias behind the real nginx and varnish of cdn_config/.

The CDN caches an alias's redirect for its short max-age; when the alias moves
on a real `pinhole ingest`, `alias.moved` goes over a real Kafka-protocol broker
(tansu) to a real `pinhole cdn-purge`, which purges the redirect from both
caches, so the next request follows the alias to its new image at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips

from pinhole import cache_policy
from tests.support.cdn import Stack, purge_roles
from tests.support.processes import PinholeProcess, wait_for_log
from tests.support.services import TansuBroker

pytestmark = pytest.mark.slow

PURGE_SECONDS = 30.0
OWNER = "cdn-owner"
ACCEPTS = ("image/avif", "image/webp", "*/*")


@pytest.fixture
def roles(
    stack: Stack, tansu: TansuBroker, unique_name: str, tmp_path: Path
) -> Iterator[tuple[PinholeProcess, PinholeProcess]]:
    with purge_roles(stack, tansu.url, unique_name, tmp_path) as started:
        yield started


async def _get(session: aiohttp.ClientSession, url: str, accept: str) -> tuple[int, str, str, str]:
    """status, X-Cache-Status, Location, Cache-Control; redirects not followed."""
    async with session.get(url, headers={"Accept": accept}, allow_redirects=False) as resp:
        await resp.read()
        return (
            resp.status,
            resp.headers.get("X-Cache-Status", ""),
            resp.headers.get("Location", ""),
            resp.headers.get("Cache-Control", ""),
        )


async def _upload(
    session: aiohttp.ClientSession, ingest: PinholeProcess, width: int, **query: str
) -> Any:
    body = pyvips.Image.black(width, 40).write_to_buffer(".jpg")
    async with session.post(
        f"{ingest.url}/v1/images",
        data=body,
        params={"owner": OWNER, **query},
        headers={"Content-Type": "image/jpeg"},
    ) as resp:
        assert resp.status == 202, await resp.text()
        return await resp.json()


async def test_a_moved_alias_is_purged_from_varnish_and_nginx(
    stack: Stack,
    roles: tuple[PinholeProcess, PinholeProcess],
    session: aiohttp.ClientSession,
) -> None:
    ingest, purger = roles
    first = await _upload(session, ingest, 701, alias="banner")
    second = await _upload(session, ingest, 702)
    bases = [stack.caches["varnish"].url, stack.caches["nginx"].url]
    paths = [f"/a/{OWNER}/banner/236x", f"/a/{OWNER}/banner/236x.webp"]
    # Cached at both CDNs, in every Accept class, pointing at the first image.
    cached_at = time.monotonic()
    for base in bases:
        for path in paths:
            for accept in ACCEPTS:
                status, _, location, control = await _get(session, base + path, accept)
                assert (status, control) == (302, cache_policy.ALIAS), (base, path)
                assert first["id"] in location
                again = await _get(session, base + path, accept)
                assert again[:3] == (302, "HIT", location), (base, path, accept)
    await wait_for_log(purger, "cdn purger listening for deletes")

    async with session.put(
        f"{ingest.url}/v1/owners/{OWNER}/aliases/banner",
        json={"record_id": second["record"]["id"]},
    ) as resp:
        assert resp.status == 200, await resp.text()
    # Well inside the redirect's max-age, both CDNs follow the alias.
    for base in bases:
        for path in paths:
            for accept in ACCEPTS:
                deadline = time.monotonic() + PURGE_SECONDS
                while True:
                    status, _, location, _ = await _get(session, base + path, accept)
                    if second["id"] in location or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert (status, second["id"] in location) == (302, True), (base, path, accept)
    # Every entry was cached less than a max-age ago: a purge, not an expiry, did it.
    assert time.monotonic() < cached_at + cache_policy.ALIAS_SECONDS


async def test_deleting_the_owner_purges_every_alias_from_varnish(
    stack: Stack,
    roles: tuple[PinholeProcess, PinholeProcess],
    session: aiohttp.ClientSession,
) -> None:
    """Varnish purges an owner's redirects by the owner's surrogate key; nginx,
    with no tag purge and nothing left to list them from, keeps them for their
    short max-age (README, Owners and records)."""
    ingest, purger = roles
    await _upload(session, ingest, 711, alias="logo")
    varnish = stack.caches["varnish"].url
    url = f"{varnish}/a/{OWNER}/logo/474x"
    assert (await _get(session, url, "*/*"))[0] == 302
    assert (await _get(session, url, "*/*"))[:2] == (302, "HIT")
    await wait_for_log(purger, "cdn purger listening for deletes")
    async with session.delete(f"{ingest.url}/v1/owners/{OWNER}") as resp:
        assert resp.status == 200, await resp.text()
    deadline = time.monotonic() + PURGE_SECONDS
    while True:
        status, cache, _, control = await _get(session, url, "*/*")
        if status == 404 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert (status, cache, control) == (404, "MISS", cache_policy.ERROR)
