"""`pinhole cdn-purge` against the real nginx and varnish of cdn_config/.

End to end: a DELETE on a real `pinhole ingest` publishes `image.deleted` on a
real Kafka-protocol broker (tansu), a real `pinhole cdn-purge` process reads it
and purges both caches, and the next request at each is a MISS and a 404.
In process: a cache that is down or says no is given up on and counted, and
does not keep the other caches from being purged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import ImageId, image_id_for_bytes
from pinhole.domain.ladder import PRESETS, Format
from pinhole.settings import CdnPurge
from server.cdn_caches import NginxCachePurge, VarnishXkeyCache, nginx_purge_requests
from server.cdn_purge import CdnPurger
from tests.support.cdn import Stack, cdn_get, purge_roles, variant_path_of
from tests.support.photos import transparent_png
from tests.support.processes import PinholeProcess, start_pinhole, wait_for_log
from tests.support.seed import seed_image
from tests.support.services import TansuBroker, free_port

pytestmark = pytest.mark.slow

ACCEPTS = ("image/avif", "image/webp", "*/*")
PURGE_SECONDS = 30.0


async def _new_image(stack: Stack, width: int) -> ImageId:
    """An image no other test has cached: a PNG of its own width."""
    store = build_blob_store(f"file://{stack.root}")
    try:
        return await seed_image(store, transparent_png("autumn-2560x1600.jpg", width=width))
    finally:
        await store.close()


def _urls(image_id: ImageId) -> list[tuple[str, dict[str, str]]]:
    """What the tests cache: a negotiated URL in every Accept class, a format URL."""
    negotiated = variant_path_of(image_id, "236x")
    return [(negotiated, {"Accept": accept}) for accept in ACCEPTS] + [
        (variant_path_of(image_id, "236x", ".webp"), {})
    ]


async def _cache_everywhere(
    session: aiohttp.ClientSession, bases: list[str], image_id: ImageId
) -> None:
    for base in bases:
        for path, headers in _urls(image_id):
            assert (await cdn_get(session, base + path, **headers))[:2] == (200, "MISS")
            assert (await cdn_get(session, base + path, **headers))[:2] == (200, "HIT")


async def _cached_then_deleted(
    stack: Stack, session: aiohttp.ClientSession, base: str, width: int
) -> ImageId:
    """A new image cached at ``base``, then gone from storage as DELETE
    /v1/images/{id} leaves it: only the cache still serves it."""
    image_id = await _new_image(stack, width)
    await _cache_everywhere(session, [base], image_id)
    for path in stack.root.rglob(f"{image_id}*"):
        path.unlink()
    return image_id


async def _assert_purged(
    session: aiohttp.ClientSession, base: str, image_id: ImageId, *, within: float = 0.0
) -> None:
    """Every cached URL of the image is a MISS and a 404, polling up to ``within``
    seconds for a purge that happens elsewhere (a 404 is never cached)."""
    deadline = time.monotonic() + within
    for path, headers in _urls(image_id):
        while True:
            status, cache, _, _, _ = await cdn_get(session, base + path, **headers)
            if status == 404 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert (status, cache) == (404, "MISS"), (base, path, headers)


def _purges(outcome: str) -> float:
    value = REGISTRY.get_sample_value("pinhole_cdn_purges_total", {"outcome": outcome})
    return value or 0.0


def test_nginx_purges_every_ladder_url_in_every_accept_class() -> None:
    image_id = image_id_for_bytes(b"an image")
    requests = list(nginx_purge_requests(image_id))
    assert len(requests) == len(PRESETS) * (len(ACCEPTS) + len(Format))
    assert len({(path, tuple(h.items())) for path, h in requests}) == len(requests)
    negotiated = [h["Accept"] for path, h in requests if path == variant_path_of(image_id)]
    assert sorted(negotiated) == sorted(ACCEPTS)


@pytest.mark.parametrize("url", ["ftp://varnish", "varnish:6081", "http://", "http:///"], ids=repr)
def test_cache_urls_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match="must be http"):
        CdnPurge(varnish_urls=[url])


# --- End to end: DELETE on ingest purges both caches. -----------------------


@pytest.fixture(name="purge_roles")
def _purge_roles(
    stack: Stack, tansu: TansuBroker, unique_name: str, tmp_path: Path
) -> Iterator[tuple[PinholeProcess, PinholeProcess]]:
    with purge_roles(stack, tansu.url, unique_name, tmp_path) as roles:
        yield roles


async def test_delete_on_ingest_purges_varnish_and_nginx(
    stack: Stack,
    purge_roles: tuple[PinholeProcess, PinholeProcess],
    session: aiohttp.ClientSession,
) -> None:
    ingest, purger = purge_roles
    bases = [stack.caches["varnish"].url, stack.caches["nginx"].url]
    image_id = await _new_image(stack, width=610)
    await _cache_everywhere(session, bases, image_id)
    # It reads from the newest offset at its first start: a delete published
    # before it subscribed is not its to purge.
    await wait_for_log(purger, "cdn purger listening for deletes")

    async with session.delete(f"{ingest.url}/v1/images/{image_id}") as resp:
        assert resp.status in (200, 204), await resp.text()
    for base in bases:
        await _assert_purged(session, base, image_id, within=PURGE_SECONDS)

    # nginx's purge counts once all its URLs are done, maybe after those checked.
    purged = 'pinhole_cdn_purges_total{outcome="purged"} 2.0'
    async with asyncio.timeout(PURGE_SECONDS):
        while True:
            async with session.get(f"{purger.url}/metrics") as resp:
                metrics = await resp.text()
            if purged in metrics:
                break
            await asyncio.sleep(0.2)
    assert 'outcome="unavailable"' not in metrics
    assert 'outcome="refused"' not in metrics
    async with session.get(f"{purger.url}/readyz") as resp:
        assert resp.status == 200


# --- In process: a cache that is down or refuses costs only itself. ---------


async def test_a_dead_cache_is_given_up_on_and_the_others_are_purged(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    nginx = stack.caches["nginx"].url
    image_id = await _cached_then_deleted(stack, session, nginx, width=620)
    before = _purges("purged"), _purges("unavailable")
    dead = VarnishXkeyCache(f"http://127.0.0.1:{free_port()}", session)
    purger = CdnPurger([dead, NginxCachePurge(nginx, session, 8)], attempts=3, cap_seconds=0.2)
    async with asyncio.timeout(20):
        await purger.purge(image_id)
    await _assert_purged(session, nginx, image_id)
    assert (_purges("purged"), _purges("unavailable")) == (before[0] + 1, before[1] + 1)


async def test_a_refusal_is_not_retried(
    stack: Stack, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """An xkey purge sent to nginx by mistake: it allows only GET and HEAD there,
    and its 403 is a setting to fix, which no retry heals; the purger says so
    at once."""
    nginx = stack.caches["nginx"].url
    before = _purges("refused")
    purger = CdnPurger([VarnishXkeyCache(nginx, session)], attempts=50, cap_seconds=5)
    with caplog.at_level(logging.WARNING):
        await purger.purge(await _new_image(stack, width=630))
    assert _purges("refused") == before + 1
    assert not [r for r in caplog.records if r.name == "pinhole.retry"], "it was retried"
    (refusal,) = [r for r in caplog.records if r.name == "pinhole.cdn_purge"]
    assert "answered 403" in str(refusal.__dict__["error"])


async def test_varnish_reports_how_many_entries_it_purged(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    varnish = stack.caches["varnish"].url
    image_id = await _cached_then_deleted(stack, session, varnish, width=640)
    cache = VarnishXkeyCache(varnish, session)
    assert await cache.purge(image_id) >= 2  # the negotiated variants and the .webp
    await _assert_purged(session, varnish, image_id)
    assert await cache.purge(image_id) == 0


async def test_pinhole_up_purges_the_cdn_in_front_of_it(
    stack: Stack, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """`pinhole up` runs the purger itself when caches are configured: its
    in-process queue carries the delete to it."""
    varnish = stack.caches["varnish"].url
    image_id = await _new_image(stack, width=650)
    await _cache_everywhere(session, [varnish], image_id)
    env = {
        "PINHOLE_STORAGE": f"file://{stack.root}",
        "PINHOLE_CDN_PURGE__VARNISH_URLS": f'["{varnish}"]',
    }
    up = start_pinhole("up", env, tmp_path)
    try:
        await wait_for_log(up, "cdn purger listening for deletes")
        async with session.delete(f"{up.url}/v1/images/{image_id}") as resp:
            assert resp.status == 204, await resp.text()
        await _assert_purged(session, varnish, image_id, within=PURGE_SECONDS)
    finally:
        up.stop()
