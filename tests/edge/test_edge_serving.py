"""The edge over real storage: lazy renders happen once, headers follow one
policy, bad URLs are refused before any work, signed sizes need a valid HMAC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pyvips

from pinhole.domain.ids import ImageId
from pinhole.domain.keys import fan_out, manifest_key, variant_key
from pinhole.domain.ladder import PRESETS_BY_NAME, Format
from pinhole.domain.manifest import Status
from server.signing import sign_path, signed_tail
from tests.support.edge import RunningEdge, edge_settings, get, running_edge
from tests.support.photos import Photo, load_photo
from tests.support.seed import seed_image

KEYS = ["new-key", "old-key"]


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[RunningEdge]:
    async with running_edge(edge_settings(tmp_path, signing_keys=KEYS)) as running:
        yield running


@pytest.fixture(scope="module")
def photo() -> Photo:
    return load_photo("autumn-2560x1600.jpg")


@pytest.fixture(scope="module")
def alpha_photo() -> Photo:
    return load_photo("kay-dark-1080x1920-alpha.png")


def _render_count() -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(
        "pinhole_renders_on_the_fly_total", {"preset": "236x", "format": "jpeg"}
    )
    return value or 0.0


async def test_a_cold_variant_is_rendered_once_for_100_concurrent_requests(
    edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo)
    url = f"{edge.url}/236x/{fan_out(image_id)}/{image_id}.jpg"
    before = _render_count()
    results = await asyncio.gather(*(get(session, url) for _ in range(100)))
    assert {status for status, _, _ in results} == {200}
    bodies = {body for _, _, body in results}
    assert len(bodies) == 1
    assert {h["ETag"] for _, h, _ in results} == {results[0][1]["ETag"]}
    assert edge.renders == 1
    assert _render_count() - before == 1
    image = pyvips.Image.new_from_buffer(bodies.pop(), "")
    assert (image.width, image.get("vips-loader")) == (236, "jpegload_buffer")
    # Stored like a transcoder-made variant: the next process finds it in storage.
    key = variant_key(PRESETS_BY_NAME["236x"], image_id, Format.JPEG)
    assert (await edge.components.store.head(key)) is not None
    status, _, _ = await get(session, url)
    assert status == 200
    assert edge.renders == 1


async def test_headers_conditional_head_and_ranges(
    edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo)
    url = f"{edge.url}/originals/{fan_out(image_id)}/{image_id}.jpg"
    status, headers, body = await get(session, url)
    assert status == 200
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers["Surrogate-Key"] == headers["Cache-Tag"] == f"img-{image_id}"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Accept-Ranges"] == "bytes"
    assert int(headers["Content-Length"]) == len(body)
    assert "Vary" not in headers
    assert "Last-Modified" in headers
    etag = headers["ETag"]
    assert etag.startswith('"')
    assert not etag.startswith("W/")

    status, h304, b304 = await get(session, url, **{"If-None-Match": etag})
    assert (status, b304, h304["ETag"]) == (304, b"", etag)
    assert h304["Cache-Control"] == "public, max-age=31536000, immutable"
    status, _, _ = await get(session, url, **{"If-None-Match": '"other"'})
    assert status == 200
    async with session.head(url) as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(body)
        assert await resp.read() == b""

    size = len(body)
    for header, start, end in (
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, size - 1),
        ("bytes=-500", size - 500, size - 1),
        (f"bytes=10-{size * 2}", 10, size - 1),
    ):
        status, h, part = await get(session, url, Range=header)
        assert status == 206, header
        assert part == body[start : end + 1], header
        assert h["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert h["ETag"] == etag
    status, h, err = await get(session, url, Range=f"bytes={size}-")
    assert status == 416
    assert h["Content-Range"] == f"bytes */{size}"
    assert h["Cache-Control"] == "no-store"
    assert b"range-not-satisfiable" in err
    # Several ranges, junk, or a stale If-Range: the whole body.
    for extra in (
        {"Range": "bytes=0-1,5-6"},
        {"Range": "pages=1"},
        {"Range": "bytes=0-9", "If-Range": '"stale"'},
    ):
        status, _, whole = await get(session, url, **extra)
        assert (status, whole) == (200, body), extra


async def test_negotiation_keys_on_the_class_and_caches_has_alpha(
    edge: RunningEdge, session: aiohttp.ClientSession, alpha_photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, alpha_photo)
    url = f"{edge.url}/236x/{fan_out(image_id)}/{image_id}"
    seen: dict[str, bytes] = {}
    for accept, media in (
        ("image/avif,image/webp,*/*", "image/avif"),
        ("image/webp,*/*", "image/webp"),
        ("text/html", "image/png"),
        ("", "image/png"),
    ):
        headers = {"Accept": accept} if accept else {}
        status, h, body = await get(session, url, **headers)
        assert status == 200
        assert h["Content-Type"] == media
        assert h["Vary"] == "Accept"
        seen[media] = body
    assert len(seen) == 3
    assert edge.renders == 3  # one per class, the second fallback came from L1
    # The fallback class no longer needs the manifest: its facts are cached.
    await edge.components.store.delete(manifest_key(image_id))
    status, h, body = await get(session, url, Accept="*/*")
    assert (status, h["Content-Type"], body) == (200, "image/png", seen["image/png"])


async def test_pending_failed_and_missing_images(
    edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo, Status.PENDING)
    base = f"/474x/{fan_out(image_id)}/{image_id}"
    for path in (base, f"{base}.webp"):
        status, headers, body = await get(session, f"{edge.url}{path}")
        assert status == 404
        assert b'"image-pending"' in body
        assert headers["Cache-Control"] == "public, max-age=5"
        assert headers["Retry-After"] == "5"
    # An opaque image has no PNG in its ladder: nothing to render.
    other = await seed_image(edge.components.store, load_photo("pastelhills-3200x2000.jpg"))
    status, headers, body = await get(session, f"{edge.url}/236x/{fan_out(other)}/{other}.png")
    assert status == 404
    assert headers["Cache-Control"] == "no-store"
    assert edge.renders == 0


async def _expect_json_error(
    session: aiohttp.ClientSession, url: str, status: int, code: str
) -> None:
    got, headers, body = await get(session, url)
    assert got == status, (url, body)
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "no-store"
    assert f'"{code}"'.encode() in body, body


async def test_bad_urls_are_refused_before_any_work(
    edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo)
    fan = fan_out(image_id)
    tail = signed_tail(300, 200, "fit", image_id, Format.JPEG)
    good = sign_path(KEYS[0], tail)
    sig = good.split("/")[2]
    for path, status, code in (
        (f"/999x/{fan}/{image_id}.jpg", 404, "not-found"),
        (f"/474x/{fan}/{image_id}.exe", 404, "not-found"),
        (f"/474x/{fan}/{image_id[:-1]}g.jpg", 404, "not-found"),
        (f"/474x/00/00/00/{image_id}.jpg", 404, "not-found"),
        (f"/474x/{fan}/..%2F..%2Foriginals%2F{fan}%2F{image_id}", 404, "not-found"),
        (f"/474x/{fan}/{'0' * 32}.jpg", 404, "not-found"),
        (f"/s/{sig}/300x200/fit/{fan}/{image_id}.png", 403, "bad-signature"),
        (f"/s/{sig[:-2]}AA/300x200/fit/{fan}/{image_id}.jpg", 403, "bad-signature"),
        (f"/s/{sig}x/300x200/fit/{fan}/{image_id}.jpg", 403, "bad-signature"),
        ("/s/" + "A" * 43 + f"/300x200/fit/{fan}/..%2F..%2F{image_id}.jpg", 403, "bad-signature"),
        (sign_path("not-a-key", tail), 403, "bad-signature"),
    ):
        await _expect_json_error(session, edge.url + path, status, code)
    # Validly signed but out of bounds or malformed: 400, still nothing rendered.
    for tail_text in (
        f"/99999x200/fit/{fan}/{image_id}.jpg",
        f"/5000x5000/fit/{fan}/{image_id}.jpg",
        f"/0x0/fit/{fan}/{image_id}.jpg",
        f"/0300x0/fit/{fan}/{image_id}.jpg",
        f"/300x200/stretch/{fan}/{image_id}.jpg",
    ):
        await _expect_json_error(
            session, edge.url + sign_path(KEYS[0], tail_text), 400, "bad-request"
        )
    assert edge.renders == 0


async def test_signed_sizes_fit_and_fill_with_rotated_keys(
    edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo)
    cases = (
        (KEYS[0], "fit", 300, 300, (300, 188)),
        (KEYS[1], "fill-centre", 300, 300, (300, 300)),
        (KEYS[0], "fill-attention", 200, 400, (200, 400)),
        (KEYS[0], "fit", 4000, 4000, (photo.width, photo.height)),  # never upscaled
    )
    for key, fit, w, h, expected in cases:
        url = edge.url + sign_path(key, signed_tail(w, h, fit, ImageId(image_id), Format.WEBP))
        status, headers, body = await get(session, url)
        assert status == 200, body
        assert headers["Content-Type"] == "image/webp"
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
        image = pyvips.Image.new_from_buffer(body, "")
        assert (image.width, image.height) == expected, fit
    renders = edge.renders
    assert renders == len(cases)
    # Negotiated signed URL: Vary, and a second request is a cache hit.
    url = edge.url + sign_path(KEYS[1], signed_tail(120, 120, "fit", ImageId(image_id)))
    for _ in range(2):
        status, headers, _ = await get(session, url, Accept="image/avif,*/*")
        assert (status, headers["Content-Type"], headers["Vary"]) == (200, "image/avif", "Accept")
    assert edge.renders == renders + 1


async def test_signed_urls_are_off_without_keys(
    tmp_path: Path, session: aiohttp.ClientSession, photo: Photo
) -> None:
    async with running_edge(edge_settings(tmp_path)) as edge:
        image_id = await seed_image(edge.components.store, photo)
        path = sign_path("any", signed_tail(100, 100, "fit", image_id, Format.JPEG))
        await _expect_json_error(session, edge.url + path, 404, "not-found")
        assert edge.renders == 0
