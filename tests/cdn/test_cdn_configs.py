"""cdn_config/ for real: nginx and varnish in front of a running `pinhole serve`.

The origin runs with no hot cache of its own (L1 off, no Redis), so once an
image's objects are deleted it answers 404 at once: every HIT below is the CDN's.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.support.cdn import (
    Stack,
    cdn_get,
    check_nginx,
    check_varnish,
    nginx_config,
    variant_path_of,
    varnish_vcl,
)
from tests.support.services import free_port

pytestmark = pytest.mark.slow

CHROME_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
FIREFOX_ACCEPT = "image/avif,image/webp,*/*"
SAFARI_ACCEPT = "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"


def test_shipped_configs_validate(tmp_path: Path) -> None:
    check_nginx(nginx_config(8080, free_port(), tmp_path / "nginx"))
    check_varnish(varnish_vcl(8080, tmp_path / "varnish"))


@pytest.mark.parametrize("cdn", ["nginx", "varnish"])
async def test_negotiated_urls_are_cached_per_accept_class(
    stack: Stack, session: aiohttp.ClientSession, cdn: str
) -> None:
    base = stack.caches[cdn].url
    url = base + variant_path_of(stack.images[0], "236x" if cdn == "nginx" else "474x")
    bodies: dict[str, bytes] = {}
    for first, second, media in (
        (CHROME_ACCEPT, FIREFOX_ACCEPT, "image/avif"),
        (SAFARI_ACCEPT, "image/webp", "image/webp"),
        ("*/*", "text/html,*/*;q=0.8", "image/jpeg"),
    ):
        status, cache, ctype, body, _ = await cdn_get(session, url, Accept=first)
        assert (status, cache, ctype) == (200, "MISS", media), first
        # A different Accept string of the same class is the same cache entry.
        status, cache, ctype, again, _ = await cdn_get(session, url, Accept=second)
        assert (status, cache, ctype) == (200, "HIT", media), second
        assert again == body
        bodies[media] = body
    assert len(set(bodies.values())) == 3
    status, cache, ctype, _, _ = await cdn_get(session, url)  # no Accept at all: fallback
    assert (status, cache, ctype) == (200, "HIT", "image/jpeg")


@pytest.mark.parametrize("cdn", ["nginx", "varnish"])
async def test_explicit_urls_never_vary_and_revalidate_with_304(
    stack: Stack, session: aiohttp.ClientSession, cdn: str
) -> None:
    url = stack.caches[cdn].url + variant_path_of(stack.images[1], "236x", ".webp")
    status, cache, ctype, body, etag = await cdn_get(session, url, Accept=CHROME_ACCEPT)
    assert (status, cache, ctype) == (200, "MISS", "image/webp")
    status, cache, _, again, _ = await cdn_get(session, url, Accept="*/*")
    assert (status, cache, again) == (200, "HIT", body)
    async with session.get(url, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
        assert resp.headers["ETag"] == etag
        assert await resp.read() == b""
    async with session.head(url) as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"


async def test_errors_are_not_cached(stack: Stack, session: aiohttp.ClientSession) -> None:
    for cache in stack.caches.values():
        url = cache.url + variant_path_of("0" * 32, "236x", ".jpg")
        for _ in range(2):
            status, hit, ctype, _, _ = await cdn_get(session, url)
            assert (status, ctype) == (404, "application/json; charset=utf-8")
            assert hit != "HIT"


async def test_a_pending_image_is_cached_for_seconds_not_a_year(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    for cache in stack.caches.values():
        url = cache.url + variant_path_of(stack.images[3], "474x", ".webp")
        async with session.get(url) as resp:
            assert resp.status == 404
            assert resp.headers["X-Cache-Status"] == "MISS"
            assert resp.headers["Cache-Control"] == "public, max-age=5"
            assert (await resp.json())["error"]["code"] == "image-pending"
        async with session.get(url) as resp:
            assert resp.status == 404
            assert resp.headers["X-Cache-Status"] == "HIT", cache.name


async def test_varnish_purge_by_surrogate_key_after_delete(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    varnish = stack.caches["varnish"]
    image_id = stack.images[2]
    urls = [varnish.url + variant_path_of(image_id, p, ".jpg") for p in ("236x", "474x")]
    for url in urls:
        assert (await cdn_get(session, url))[:2] == (200, "MISS")
        assert (await cdn_get(session, url))[:2] == (200, "HIT")
    # Delete every object of the image (what DELETE /v1/images/{id} does in storage)...
    for path in stack.root.rglob(f"{image_id}*"):
        path.unlink()
    assert (await cdn_get(session, urls[0]))[:2] == (200, "HIT")  # the edge still has it
    # ...then purge every URL of it at once by its surrogate key.
    async with session.request(
        "PURGE", varnish.url + "/", headers={"xkey-purge": f"img-{image_id}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
    for url in urls:
        status, cache, _, _, _ = await cdn_get(session, url)
        assert (status, cache) == (404, "MISS")


async def test_nginx_purge_per_accept_class_after_delete(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    nginx = stack.caches["nginx"]
    image_id = stack.images[4]
    negotiated = variant_path_of(image_id, "236x")
    explicit = variant_path_of(image_id, "474x", ".jpg")
    classes = ("image/avif", "image/webp", "*/*")
    for accept in classes:
        assert (await cdn_get(session, nginx.url + negotiated, Accept=accept))[:2] == (200, "MISS")
        assert (await cdn_get(session, nginx.url + negotiated, Accept=accept))[:2] == (200, "HIT")
    assert (await cdn_get(session, nginx.url + explicit))[:2] == (200, "MISS")
    assert (await cdn_get(session, nginx.url + explicit))[:2] == (200, "HIT")
    # Delete every object of the image (what DELETE /v1/images/{id} does in storage)...
    for path in stack.root.rglob(f"{image_id}*"):
        path.unlink()
    assert (await cdn_get(session, nginx.url + explicit))[:2] == (200, "HIT")  # still cached
    # ...then purge each cache key: one per Accept class, one for the explicit URL.
    for accept in classes:
        async with session.get(
            nginx.url + "/purge" + negotiated, headers={"Accept": accept}
        ) as resp:
            assert resp.status == 200, (accept, await resp.text())
    async with session.get(nginx.url + "/purge" + explicit) as resp:
        assert resp.status == 200, await resp.text()
    # A second purge finds nothing under those keys.
    async with session.get(nginx.url + "/purge" + explicit) as resp:
        assert resp.status == 404
    for accept in classes:
        status, cache, _, _, _ = await cdn_get(session, nginx.url + negotiated, Accept=accept)
        assert (status, cache) == (404, "MISS"), accept
    status, cache, _, _, _ = await cdn_get(session, nginx.url + explicit)
    assert (status, cache) == (404, "MISS")
