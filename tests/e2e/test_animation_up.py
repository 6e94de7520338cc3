"""Animated uploads through a real `pinhole up` process: an animated GIF ends
ready, every variant has all its frames at the preset's size, the extension-less
URL answers animated WebP or GIF by Accept, and hostile animations get 422 from
the block walk, before any decoder runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
import pytest
import pyvips

from tests.support.animations import (
    Animated,
    distinct_frames,
    gif_big_screen,
    gif_with_frame_outside_screen,
    package_animation,
    panning,
)
from tests.support.badinput import gif_with_frames
from tests.support.photos import photo_path
from tests.support.pipeline import wait_ready
from tests.support.processes import PinholeProcess, start_pinhole

pytestmark = pytest.mark.slow

PHOTO = "autumn-2560x1600.jpg"
BROWSER_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PinholeProcess]:
    workdir = tmp_path_factory.mktemp("animation-up")
    process = start_pinhole("up", {}, workdir, cwd=workdir)
    try:
        yield process
    finally:
        process.stop()


async def _post(session: aiohttp.ClientSession, up: PinholeProcess, data: bytes) -> Any:
    headers = {"Content-Type": "application/octet-stream"}
    async with session.post(f"{up.url}/v1/images", data=data, headers=headers) as resp:
        return resp.status, await resp.json()


async def _upload_ready(
    session: aiohttp.ClientSession, up: PinholeProcess, data: bytes
) -> dict[str, Any]:
    status, body = await _post(session, up, data)
    assert status == 202, body
    manifest = await wait_ready(session, body["status_url"])
    assert manifest["status"] == "ready", manifest
    return manifest


async def _get(
    session: aiohttp.ClientSession, url: str, accept: str | None = None
) -> tuple[Mapping[str, str], bytes]:
    headers = {"Accept": accept} if accept is not None else {}
    async with session.get(url, headers=headers) as resp:
        assert resp.status == 200, (url, await resp.text())
        return resp.headers, await resp.read()


def _pages(body: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(body, "", n=-1)


async def test_an_animated_gif_ends_ready_with_every_frame_in_every_variant(
    up: PinholeProcess, session: aiohttp.ClientSession
) -> None:
    made: Animated = panning(PHOTO, 960, 600, 18, loop=0)
    manifest = await _upload_ready(session, up, made.data)
    assert manifest["animated"] is True
    animation = manifest["animation"]
    assert animation["frames"] == made.frames
    assert animation["duration_ms"] == sum(made.delays_ms)
    assert animation["loop"] == made.loop
    formats = {v["format"] for v in manifest["variants"]}
    assert formats == {"avif", "webp", "png", "gif"}
    for v in manifest["variants"]:
        where = f"{v['preset']}.{v['format']}"
        assert v["bytes"], where  # rendered by the transcoder, not left to the edge
        headers, body = await _get(session, v["url"])
        assert headers["Content-Type"] == f"image/{v['format']}", where
        if v["format"] in ("webp", "gif"):
            image = _pages(body)
            assert image.get("n-pages") == made.frames, where
            assert (image.width, image.get("page-height")) == (v["width"], v["height"]), where
            assert list(image.get("delay")) == list(made.delays_ms), where
            assert distinct_frames(body) == made.frames, where
        else:
            image = pyvips.Image.new_from_buffer(body, "")
            assert (image.width, image.height) == (v["width"], v["height"]), where
    # A poster URL of every preset is a still of the first frame.
    assert set(animation["poster"]) == {"236x", "474x", "736x", "1200x", "originals"}
    _, poster = await _get(session, animation["poster"]["236x"])
    assert pyvips.Image.new_from_buffer(poster, "").get("vips-loader").startswith("pngload")

    # Negotiation: animated WebP for browsers that take WebP, GIF for the rest.
    url = manifest["urls"]["474x"]
    for accept, expected in (
        (BROWSER_ACCEPT, "image/webp"),
        ("image/webp,*/*", "image/webp"),
        ("*/*", "image/gif"),
        (None, "image/gif"),
    ):
        headers, body = await _get(session, url, accept)
        assert headers["Content-Type"] == expected, accept
        assert headers["Vary"] == "Accept", accept
        assert _pages(body).get("n-pages") == made.frames, accept
    # Explicit extensions do not vary.
    headers, _ = await _get(session, url + ".gif", BROWSER_ACCEPT)
    assert headers["Content-Type"] == "image/gif"
    assert "Vary" not in headers


async def test_a_real_animated_webp_stays_animated(
    up: PinholeProcess, session: aiohttp.ClientSession
) -> None:
    data = package_animation("iss634.webp")  # Pillow's test image, 42 frames
    manifest = await _upload_ready(session, up, data)
    assert manifest["animated"] is True
    assert manifest["animation"]["frames"] == 42
    _, body = await _get(session, manifest["urls"]["236x"], BROWSER_ACCEPT)
    image = _pages(body)
    assert image.get("n-pages") >= distinct_frames(data) > 1
    assert image.width == 236


async def test_a_still_image_negotiates_as_before(
    up: PinholeProcess, session: aiohttp.ClientSession
) -> None:
    still = pyvips.Image.thumbnail(str(photo_path(PHOTO)), 300)
    manifest = await _upload_ready(session, up, still.write_to_buffer(".jpg"))
    assert manifest["animated"] is False
    assert manifest["animation"] is None
    headers, _ = await _get(session, manifest["urls"]["236x"], BROWSER_ACCEPT)
    assert headers["Content-Type"] == "image/avif"
    headers, _ = await _get(session, manifest["urls"]["236x"])
    assert headers["Content-Type"] == "image/jpeg"
    async with session.get(manifest["urls"]["236x"] + ".gif") as resp:
        assert resp.status == 404


@pytest.mark.parametrize(
    ("name", "data", "code", "message"),
    [
        ("too many frames", gif_with_frames(1001), "image-too-large", "over 1000 frames"),
        (
            "too many pixels over all frames",
            gif_big_screen(2000, 2000, 13),
            "image-too-large",
            "pixels over all its frames",
        ),
        (
            "a frame outside the screen",
            gif_with_frame_outside_screen(),
            "undecodable-image",
            "lies outside the 16x16 logical screen",
        ),
        (
            "a real GIF with a frame outside the screen",
            None,
            "undecodable-image",
            "lies outside the 100x100 logical screen",
        ),
    ],
    ids=lambda x: x if isinstance(x, str) and " " in x else "",
)
async def test_hostile_animations_get_422_before_any_decode(
    up: PinholeProcess,
    session: aiohttp.ClientSession,
    name: str,
    data: bytes | None,
    code: str,
    message: str,
) -> None:
    body = data if data is not None else package_animation("test_extents.gif")
    status, answer = await _post(session, up, body)
    assert status == 422, (name, answer)
    assert answer["error"]["code"] == code, name
    # The wording is the block walk's (ingest/structure.py), which runs before
    # libvips opens the file: no decoder saw these bytes.
    assert message in answer["error"]["message"], (name, answer)
