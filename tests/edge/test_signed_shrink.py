"""Signed sizes on a real edge with shrink-on-load: ``<w>x0`` and ``0x<h>`` follow
the aspect, sizes are exact and never upscaled, a rotated photo comes out
upright, and a truncated original (or a corrupt WebP) still answers a JSON 422
(never a grey picture) at every shrink factor, exactly when a full decode fails.
``pinhole sign`` prints ``x0`` URLs."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import pyvips

from pinhole.domain.ids import ImageId
from pinhole.domain.ladder import Format
from pinhole.settings import Limits
from server.signing import sign_path, signed_tail
from tests.support.clirun import run_pinhole
from tests.support.edge import RunningEdge, edge_settings, get, running_edge
from tests.support.photos import (
    Photo,
    load_photo,
    photo_path,
    rotated_with_exif,
    truncated,
    webp_of,
)
from tests.support.seed import seed_image
from transcoder.vips_engine import decode_strict

KEY = "shrink-key"


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[RunningEdge]:
    async with running_edge(edge_settings(tmp_path, signing_keys=[KEY])) as running:
        yield running


def _url(edge: RunningEdge, image_id: ImageId, w: int, h: int, fit: str, fmt: Format) -> str:
    return edge.url + sign_path(KEY, signed_tail(w, h, fit, image_id, fmt))


async def test_one_side_follows_the_aspect_and_nothing_is_upscaled(
    edge: RunningEdge, session: aiohttp.ClientSession
) -> None:
    photo = load_photo("autumn-2560x1600.jpg")
    image_id = await seed_image(edge.components.store, photo)
    for w, h, fit, expected in (
        (640, 0, "fit", (640, 400)),
        (0, 300, "fit", (480, 300)),
        (300, 0, "fill-centre", (300, 188)),  # one side: nothing to crop
        (0, 100, "fill-attention", (160, 100)),
        (4000, 0, "fit", (2560, 1600)),  # never upscaled
        (0, 4000, "fit", (2560, 1600)),
        (123, 77, "fill-centre", (123, 77)),
        (3000, 1000, "fill-centre", (2560, 1000)),  # cover, but never upscaled
    ):
        for fmt in (Format.JPEG, Format.WEBP):
            status, headers, body = await get(session, _url(edge, image_id, w, h, fit, fmt))
            assert status == 200, (w, h, fit, body)
            assert headers["Content-Type"] == fmt.media_type
            image = pyvips.Image.new_from_buffer(body, "")
            assert (image.width, image.height) == expected, (w, h, fit, fmt)
            assert image.get_typeof("exif-data") == 0


async def test_a_rotated_photo_comes_out_upright_at_a_shrunk_size(
    edge: RunningEdge, session: aiohttp.ClientSession
) -> None:
    photo = rotated_with_exif("autumn-2560x1600.jpg", 6)
    image_id = await seed_image(edge.components.store, photo)
    status, _, body = await get(session, _url(edge, image_id, 0, 100, "fit", Format.JPEG))
    assert status == 200, body
    out = pyvips.Image.new_from_buffer(body, "")
    assert (out.width, out.height) == (160, 100)
    assert out.get_typeof("exif-data") == 0
    upright = pyvips.Image.new_from_file(str(photo_path("autumn-2560x1600.jpg")))
    expected = upright.thumbnail_image(160, height=100)
    wrong = upright.rot180().thumbnail_image(160, height=100)
    assert _mean_abs(out, expected) < 6 < _mean_abs(out, wrong)


def _mean_abs(a: pyvips.Image, b: pyvips.Image) -> float:
    return float((a.cast("float") - b.cast("float")).abs().avg())


@pytest.mark.parametrize("kind", ["jpeg", "webp"])
async def test_damaged_originals_fail_with_422_as_a_full_decode_does_at_every_shrink(
    edge: RunningEdge, session: aiohttp.ClientSession, kind: str
) -> None:
    name = "pastelhills-3200x2000.jpg"
    whole = load_photo(name) if kind == "jpeg" else webp_of(name)
    cut = truncated(whole)
    # The header is intact, 20 kB of the coded data from a third on are garbage.
    start = len(whole.data) // 3
    garbage = bytes(b ^ 0x55 for b in whole.data[start : start + 20_000])
    corrupt = Photo(
        f"{whole.name}-corrupt",
        whole.data[:start] + garbage + whole.data[start + 20_000 :],
        3200,
        2000,
        False,
    )
    for damaged in (cut, corrupt):
        # Exactly as strict as a full decode: libjpeg resynchronises on garbage in
        # the coded data with a warning, which fail_on="error" accepted before
        # shrink-on-load too; libwebp fails on it, and both fail on truncation.
        full_decode_fails = _full_decode_fails(damaged.data)
        assert full_decode_fails == (damaged is cut or kind == "webp")
        image_id = await seed_image(edge.components.store, damaged)
        # Shrink 1.6, 3.2, 10.7, 32 and 100: no scaling, JPEG by 2, 4, 8, WebP scaled.
        for w, h, fit in (
            (2000, 0, "fit"),
            (1000, 1000, "fit"),
            (300, 0, "fit"),
            (100, 100, "fill-centre"),
            (0, 20, "fit"),
        ):
            url = _url(edge, image_id, w, h, fit, Format.WEBP)
            status, headers, text = await get(session, url)
            if not full_decode_fails:
                assert status == 200, (damaged.name, w, h, text[:200])
                continue
            assert status == 422, (damaged.name, w, h, text[:200])
            assert headers["Content-Type"].startswith("application/json")
            assert headers["Cache-Control"] == "no-store"
            assert b'"undecodable-image"' in text


def _full_decode_fails(data: bytes) -> bool:
    try:
        decode_strict(data, Limits())
    except pyvips.Error:
        return True
    return False


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINHOLE_")}
    env["PINHOLE_EDGE__SIGNING_KEYS"] = f'["{KEY}"]'
    env["PINHOLE_STORAGE"] = f"file://{tmp_path / 'cli-blobs'}"
    return env


async def test_pinhole_sign_prints_x0_and_0x_urls_the_edge_serves(
    tmp_path: Path, edge: RunningEdge, session: aiohttp.ClientSession
) -> None:
    photo = load_photo("autumn-2560x1600.jpg")
    image_id = await seed_image(edge.components.store, photo)
    env = _cli_env(tmp_path)
    for size, expected in (("640x0", (640, 400)), ("0x300", (480, 300))):
        signed = await run_pinhole(["sign", image_id, size, "--format", "webp"], env, 60)
        assert signed.returncode == 0, signed
        path = urlsplit(signed.stdout.strip()).path
        assert re.fullmatch(rf"/s/[A-Za-z0-9_-]{{43}}/{size}/fit/.+\.webp", path), path
        status, _, body = await get(session, edge.url + path)
        assert status == 200, body
        image = pyvips.Image.new_from_buffer(body, "")
        assert (image.width, image.height) == expected
    refused = await run_pinhole(["sign", image_id, "0x0"], env, 60)
    assert refused.returncode != 0
    assert "size must be" in refused.stderr
