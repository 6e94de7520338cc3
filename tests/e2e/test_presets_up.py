"""Configured presets through a real `pinhole up` process (PINHOLE_PRESETS: a
square avatar at 1x and 2x, cover with gravity focal; a 16:9 card; the default
ladder): each is served at its exact size, the manifest lists them with their
real sizes and srcsets per aspect, /readyz names the table's fingerprint, a
focal point given at upload (query or multipart field) moves the crop, and an
edge with another preset table detects the mismatch instead of rendering."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import pyvips

from tests.support.clirun import run_pinhole
from tests.support.photos import load_photo
from tests.support.pipeline import wait_ready
from tests.support.processes import PinholeProcess, start_pinhole

pytestmark = pytest.mark.slow

PHOTO = "pastelhills-3200x2000.jpg"
PRESETS = {
    "avatar": {"width": 256, "height": 256, "fit": "cover", "gravity": "focal"},
    "avatar-2x": {"width": 512, "height": 512, "fit": "cover", "gravity": "focal"},
    "card": {"width": 640, "height": 360, "fit": "cover", "gravity": "centre"},
}
# A red square in the top right of the photo, outside its centre crop.
MARK = (2700, 300, 200, 200)
ON_MARK = "0.875,0.2"
AWAY = "0.1,0.8"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("presets-up")


@pytest.fixture(scope="module")
def up(workdir: Path) -> Iterator[PinholeProcess]:
    env = {"PINHOLE_PRESETS": json.dumps(PRESETS)}
    process = start_pinhole("up", env, workdir, cwd=workdir)
    try:
        yield process
    finally:
        process.stop()


def _marked(quality: int) -> bytes:
    image = pyvips.Image.new_from_buffer(load_photo(PHOTO).data, "")
    marked = image.draw_rect([255, 0, 0], *MARK, fill=True)
    return bytes(marked.write_to_buffer(".jpg", Q=quality))


def _red(body: bytes) -> float:
    """The share of the picture that is the mark's red."""
    image = pyvips.Image.new_from_buffer(body, "").colourspace("srgb")
    mask = (image[0] > 180) & (image[1] < 90) & (image[2] < 90)
    return float(mask.avg()) / 255


async def _get(session: aiohttp.ClientSession, url: str, accept: str = "*/*") -> bytes:
    async with session.get(url, headers={"Accept": accept}) as resp:
        assert resp.status == 200, (url, await resp.text())
        return await resp.read()


def _size(body: bytes) -> tuple[int, int]:
    image = pyvips.Image.new_from_buffer(body, "")
    return image.width, image.height


async def _upload(
    session: aiohttp.ClientSession, url: str, data: bytes, *, form_focal: str | None = None
) -> dict[str, Any]:
    if form_focal is None:
        headers = {"Content-Type": "image/jpeg"}
        async with session.post(url, data=data, headers=headers) as resp:
            body = await resp.json()
            assert resp.status == 202, body
    else:
        form = aiohttp.FormData()
        form.add_field("focal", form_focal)
        form.add_field("file", data, filename="p.jpg", content_type="image/jpeg")
        async with session.post(url, data=form) as resp:
            body = await resp.json()
            assert resp.status == 202, body
    manifest = await wait_ready(session, body["status_url"])
    assert manifest["status"] == "ready", manifest
    return manifest


async def test_every_preset_at_its_size_with_manifest_srcsets_and_focal(
    up: PinholeProcess, session: aiohttp.ClientSession
) -> None:
    manifest = await _upload(session, f"{up.url}/v1/images?focal={ON_MARK}", _marked(95))
    assert manifest["focal"] == {"x": 0.875, "y": 0.2}
    sizes = {(v["preset"], v["format"]): (v["width"], v["height"]) for v in manifest["variants"]}
    assert sizes[("avatar", "avif")] == (256, 256)
    assert sizes[("avatar-2x", "jpeg")] == (512, 512)
    assert sizes[("card", "webp")] == (640, 360)
    assert sizes[("736x", "jpeg")] == (736, 460)
    assert all(v["bytes"] for v in manifest["variants"])  # every one rendered (eager)
    # Served at exactly those sizes, by extension and negotiated.
    urls = manifest["urls"]
    assert _size(await _get(session, urls["avatar"], "image/avif")) == (256, 256)
    assert _size(await _get(session, urls["avatar-2x"], "image/webp")) == (512, 512)
    assert _size(await _get(session, urls["card"])) == (640, 360)
    assert _size(await _get(session, urls["1200x"])) == (1200, 750)
    # srcsets: the width ladder as always, the squares by density, the card alone.
    assert manifest["srcset"]["auto"].endswith(" 3200w")
    assert "avatar" not in manifest["srcset"]["auto"]
    square = manifest["srcset_groups"]["1x1"]["jpeg"]
    assert square == f"{urls['avatar']}.jpg 1x, {urls['avatar-2x']}.jpg 2x"
    assert manifest["srcset_groups"]["16x9"]["auto"] == f"{urls['card']} 1x"
    # Every role reports the table it runs, and the manifest says which rendered it.
    async with session.get(f"{up.url}/readyz") as resp:
        ready = await resp.json()
    assert ready["presets"]["fingerprint"] == manifest["presets"]
    assert ready["presets"]["names"][-3:] == ["avatar", "avatar-2x", "card"]
    assert ready["checks"]["presets"] == "ok"
    # The focal point holds the mark in both avatars.
    on = await _get(session, f"{urls['avatar']}.jpg")
    assert 0.005 < _red(on) < 0.02  # (200 px of 2000)^2 = 1% of the square
    assert _red(await _get(session, f"{urls['avatar-2x']}.jpg")) > 0.005

    # Another upload (other bytes), its focal point in the form, far from the mark.
    other = await _upload(session, f"{up.url}/v1/images", _marked(94), form_focal=AWAY)
    assert other["focal"] == {"x": 0.1, "y": 0.8}
    assert _red(await _get(session, f"{other['urls']['avatar']}.jpg")) == 0


async def test_a_bad_focal_point_is_refused(
    up: PinholeProcess, session: aiohttp.ClientSession
) -> None:
    for focal in ("1.5,0.2", "0.5", "x,y", "nan,0.5"):
        async with session.post(
            f"{up.url}/v1/images?focal={focal}",
            data=_marked(90),
            headers={"Content-Type": "image/jpeg"},
        ) as resp:
            assert resp.status == 400, focal
            assert (await resp.json())["error"]["code"] == "bad-request"


async def test_an_edge_with_another_table_detects_the_mismatch(
    up: PinholeProcess, session: aiohttp.ClientSession, workdir: Path
) -> None:
    manifest = await _upload(session, f"{up.url}/v1/images?focal={ON_MARK}", _marked(93))
    image_id = manifest["id"]
    # An edge on the same storage with the default presets only.
    edge = start_pinhole(
        "serve",
        {"PINHOLE_STORAGE": f"file://{workdir / 'var' / 'pinhole'}"},
        workdir,
        cwd=workdir,
    )
    try:
        async with session.get(f"{edge.url}/readyz") as resp:
            before = await resp.json()
        assert before["presets"]["fingerprint"] != manifest["presets"]
        assert before["checks"]["presets"] == "ok"
        # A stored variant is served as it is; a missing one is not rendered here.
        path = urlsplit(manifest["urls"]["474x"]).path
        assert _size(await _get(session, f"{edge.url}{path}.jpg")) == (474, 296)
        stored = [
            p for p in (workdir / "var" / "pinhole").rglob(f"{image_id}.webp") if "736x" in p.parts
        ]
        assert len(stored) == 1
        os.remove(stored[0])
        async with session.get(f"{edge.url}{path.replace('474x', '736x')}.webp") as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "preset-mismatch"
        async with session.get(f"{edge.url}/readyz") as resp:
            after = await resp.json()
        assert after["checks"]["presets"].startswith("degraded")
        assert after["presets"]["mismatched"][manifest["presets"]] >= 1
        async with session.get(f"{edge.url}/metrics") as resp:
            metrics = await resp.text()
        count = [
            line
            for line in metrics.splitlines()
            if line.startswith("pinhole_preset_mismatches_total")
        ]
        assert count
        assert float(count[0].split()[-1]) >= 1
    finally:
        edge.stop()


async def test_the_commands_use_the_configured_table_and_refuse_a_bad_one(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINHOLE_")}
    env["PINHOLE_EDGE__SIGNING_KEYS"] = '["presets-test-key-0123456789abcdef"]'
    env["PINHOLE_STORAGE"] = f"file://{tmp_path / 'blobs'}"
    image_id = "7b8827cb86960c1a21c93d673c38095e"
    args = ["sign", image_id, "avatar", "--format", "webp", "--expires-in", "600"]
    default = await run_pinhole(args, env, within_seconds=60)
    assert default.returncode != 0  # no such preset in the default table
    configured = await run_pinhole(
        args, {**env, "PINHOLE_PRESETS": json.dumps(PRESETS)}, within_seconds=60
    )
    assert configured.returncode == 0, configured
    assert f"/avatar/7b/88/27/{image_id}.webp" in configured.stdout
    bad = {"Bad Name": {"width": 10}}
    refused = await run_pinhole(
        ["up", "--port", "0"], {**env, "PINHOLE_PRESETS": json.dumps(bad)}, within_seconds=60
    )
    assert refused.returncode == 1
    assert "invalid settings" in refused.stderr
    assert "a preset name is 1-32 of a-z" in refused.stderr
    assert "Traceback" not in refused.stderr
