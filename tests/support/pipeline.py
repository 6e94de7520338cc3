"""Checks shared by the end-to-end suites: upload, wait for ready, verify every variant."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pyvips

from pinhole.domain.ladder import PRESETS_BY_NAME
from tests.support.photos import Photo

_LOADER_FOR_FORMAT = {"avif": "heifload", "webp": "webpload", "jpeg": "jpegload", "png": "pngload"}
_METADATA_FIELDS = ("exif-data", "xmp-data", "iptc-data", "icc-profile-data")


async def upload(
    session: aiohttp.ClientSession, ingest_url: str, photo: Photo, token: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "image/octet-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with session.post(f"{ingest_url}/v1/images", data=photo.data, headers=headers) as resp:
        return resp.status, await resp.json()


async def wait_ready(
    session: aiohttp.ClientSession, status_url: str, within_seconds: float = 240.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within_seconds
    while True:
        async with session.get(status_url) as resp:
            assert resp.status == 200, await resp.text()
            manifest: dict[str, Any] = await resp.json()
        if manifest["status"] != "pending":
            return manifest
        if time.monotonic() > deadline:
            raise TimeoutError(f"{status_url} still pending after {within_seconds}s")
        await asyncio.sleep(0.25)


def decode(body: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(body, "")


async def verify_ready_image(
    session: aiohttp.ClientSession, manifest: dict[str, Any], photo: Photo
) -> None:
    """Every variant URL answers with the right format, width, alpha and no metadata."""
    assert manifest["status"] == "ready", manifest
    assert (manifest["width"], manifest["height"]) == (photo.width, photo.height)
    assert manifest["placeholder"]["average_color"].startswith("#")
    fallback = "png" if photo.has_alpha else "jpeg"
    formats = {v["format"] for v in manifest["variants"]}
    assert formats == {"avif", "webp", fallback}
    assert len(manifest["variants"]) == 15
    for variant in manifest["variants"]:
        preset = PRESETS_BY_NAME[variant["preset"]]
        expected_width = preset.target_width(photo.width)
        async with session.get(variant["url"]) as resp:
            assert resp.status == 200, (variant["url"], await resp.text())
            body = await resp.read()
            assert resp.headers["Content-Type"] == f"image/{variant['format']}"
            assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Surrogate-Key"] == f"img-{manifest['id']}"
            assert resp.headers["ETag"].startswith('"')
            assert "Vary" not in resp.headers
            assert int(resp.headers["Content-Length"]) == len(body) == variant["bytes"]
        image = decode(body)
        where = f"{photo.name} {variant['preset']} {variant['format']}"
        assert str(image.get("vips-loader")).startswith(_LOADER_FOR_FORMAT[variant["format"]]), (
            where
        )
        assert image.width == expected_width == variant["width"], where
        assert abs(image.height - photo.height * expected_width / photo.width) <= 1, where
        if photo.transparent or variant["format"] == "png":
            assert image.hasalpha(), f"{where} lost its alpha channel"
        if not photo.has_alpha:
            assert not image.hasalpha(), where
        for field in _METADATA_FIELDS:
            assert image.get_typeof(field) == 0, f"{where} still carries {field}"


async def verify_negotiation(session: aiohttp.ClientSession, manifest: dict[str, Any]) -> None:
    url = manifest["urls"]["474x"]
    fallback = "image/png" if manifest["has_alpha"] else "image/jpeg"
    for accept, expected in (
        ("image/avif,image/webp,image/apng,*/*;q=0.8", "image/avif"),
        ("image/webp,*/*", "image/webp"),
        ("image/avif;q=0,image/webp", "image/webp"),
        ("*/*", fallback),
        ("", fallback),
    ):
        headers = {"Accept": accept} if accept else {}
        async with session.get(url, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"] == expected, accept
            assert resp.headers["Vary"] == "Accept"
            etag = resp.headers["ETag"]
        async with session.get(url, headers={**headers, "If-None-Match": etag}) as resp:
            assert resp.status == 304
            assert await resp.read() == b""
        async with session.head(url, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == expected
            assert await resp.read() == b""


async def upload_all_and_verify(
    session: aiohttp.ClientSession, ingest_url: str, photos: list[Photo], token: str | None
) -> list[dict[str, Any]]:
    accepted = []
    for photo in photos:
        status, body = await upload(session, ingest_url, photo, token)
        assert status == 202, body
        assert body["status"] == "pending"
        assert len(body["variants"]) == 15
        accepted.append((photo, body))
    manifests = []
    for photo, body in accepted:
        manifest = await wait_ready(session, body["status_url"])
        # The URLs promised at upload are the URLs that now serve.
        assert [v["url"] for v in manifest["variants"]] == [v["url"] for v in body["variants"]]
        await verify_ready_image(session, manifest, photo)
        manifests.append(manifest)
    await verify_negotiation(session, manifests[0])
    alpha = next(m for m in manifests if m["has_alpha"])
    await verify_negotiation(session, alpha)
    # Same bytes again: same id, answered 200 with the ready manifest.
    status, again = await upload(session, ingest_url, photos[0], token)
    assert status == 200
    assert again["id"] == manifests[0]["id"]
    assert again["status"] == "ready"
    return manifests


async def _expect_error(resp: aiohttp.ClientResponse, status: int, code: str, what: str) -> None:
    text = await resp.text()
    assert resp.status == status, f"{what}: {resp.status} {text}"
    assert resp.headers["Content-Type"].startswith("application/json"), what
    assert "Traceback" not in text
    body = await resp.json()
    assert body["error"]["code"] == code, f"{what}: {body}"
    assert body["error"]["message"], what


async def verify_bad_inputs(
    session: aiohttp.ClientSession, ingest_url: str, token: str | None, photo: Photo
) -> None:
    """Each broken upload gets its 4xx and code; the service stays up."""
    from tests.support import badinput

    auth = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{ingest_url}/v1/images"
    raw_cases: list[tuple[str, bytes, str, int, str]] = [
        ("empty body", b"", "image/jpeg", 400, "empty-body"),
        ("text labelled JPEG", badinput.TEXT_AS_JPEG, "image/jpeg", 415, "unsupported-media-type"),
        ("HTML labelled PNG", badinput.HTML_AS_IMAGE, "image/png", 415, "unsupported-media-type"),
        (
            "SVG with script",
            badinput.SVG_WITH_SCRIPT,
            "image/svg+xml",
            415,
            "unsupported-media-type",
        ),
        ("truncated JPEG", badinput.truncated(photo.data), "image/jpeg", 422, "undecodable-image"),
        (
            "over the pixel limit",
            badinput.over_pixel_limit_png(),
            "image/png",
            422,
            "image-too-large",
        ),
        (
            "huge declared size",
            badinput.png_declaring(100_000, 100_000),
            "image/png",
            422,
            "image-too-large",
        ),
        (
            "image sent as text/plain",
            badinput.small_jpeg(),
            "text/plain",
            415,
            "unsupported-media-type",
        ),
    ]
    for what, data, content_type, status, code in raw_cases:
        async with session.post(
            url, data=data, headers={**auth, "Content-Type": content_type}
        ) as resp:
            await _expect_error(resp, status, code, what)

    form = aiohttp.FormData()
    form.add_field("file", badinput.TEXT_AS_JPEG, filename="holiday.jpg", content_type="image/jpeg")
    async with session.post(url, data=form, headers=auth) as resp:
        await _expect_error(resp, 415, "unsupported-media-type", "text file named .jpg")
    form = aiohttp.FormData()
    form.add_field("picture", badinput.small_jpeg(), filename="a.jpg", content_type="image/jpeg")
    async with session.post(url, data=form, headers=auth) as resp:
        await _expect_error(resp, 400, "bad-request", "multipart without a file field")
    if token:
        async with session.post(
            url, data=badinput.small_jpeg(), headers={"Content-Type": "image/jpeg"}
        ) as resp:
            await _expect_error(resp, 401, "unauthorized", "no token")
        async with session.post(
            url,
            data=badinput.small_jpeg(),
            headers={"Content-Type": "image/jpeg", "Authorization": "Bearer wrong"},
        ) as resp:
            await _expect_error(resp, 401, "unauthorized", "wrong token")
    async with session.put(url, data=b"x") as resp:
        await _expect_error(resp, 405, "method-not-allowed", "PUT")
    async with session.get(f"{ingest_url}/v1/images/..%2F..%2Fetc%2Fpasswd") as resp:
        await _expect_error(resp, 400, "bad-request", "traversal id")
    async with session.get(f"{ingest_url}/v1/images/{'0' * 32}") as resp:
        await _expect_error(resp, 404, "not-found", "unknown id")
    async with session.get(f"{ingest_url}/healthz") as resp:
        assert resp.status == 200


async def verify_bad_edge_urls(
    session: aiohttp.ClientSession, edge_url: str, image_id: str
) -> None:
    fan = f"{image_id[0:2]}/{image_id[2:4]}/{image_id[4:6]}"
    for what, path in (
        ("unknown preset", f"/999x/{fan}/{image_id}.jpg"),
        ("bad extension", f"/474x/{fan}/{image_id}.exe"),
        ("fan-out mismatch", f"/474x/00/00/00/{image_id}.jpg"),
        ("short id", f"/474x/{fan}/abc.jpg"),
        ("traversal", f"/474x/{fan}/..%2F..%2Foriginals.jpg"),
        ("unknown image", f"/474x/00/00/00/{'0' * 32}.jpg"),
    ):
        async with session.get(f"{edge_url}{path}") as resp:
            await _expect_error(resp, 404, "not-found", what)
            assert resp.headers["Cache-Control"] == "no-store"
