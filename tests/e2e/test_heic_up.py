"""iPhone-style HEICs uploaded to a real `pinhole up` process: they end `ready`,
every variant decodes at its size, the edge renders a signed size of one on the
fly, a Display P3 chart comes out sRGB with the right colours, and hostile or
broken HEICs get their 422 before any decode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import pyvips

from pinhole.domain.ids import ImageId
from pinhole.domain.ladder import Format
from server.signing import sign_path, signed_tail
from tests.support.heif import chart_errors, heif_sample, p3_chart
from tests.support.photos import Photo
from tests.support.pipeline import upload, verify_ready_image, wait_ready
from tests.support.processes import PinholeProcess, start_pinhole

pytestmark = pytest.mark.slow
KEY = "heic-test-signing-key"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PinholeProcess]:
    workdir = tmp_path_factory.mktemp("heic-up")
    process = start_pinhole(
        "up", {"PINHOLE_EDGE__SIGNING_KEYS": f'["{KEY}"]'}, workdir, cwd=workdir
    )
    try:
        yield process
    finally:
        process.stop()


def _photo(name: str, width: int, height: int, alpha: bool = False) -> Photo:
    return Photo(name, heif_sample(name), width, height, alpha, transparent=alpha)


HEICS = [
    # An iPhone photo: 49-tile grid, P3 ICC, a depth map; and one with irot 270°.
    _photo("pug.heic", 4032, 3024),
    _photo("arrow.heic", 3024, 4032),
    # heif-enc (x265) from the real photographs: P3, and a transparent disc.
    _photo("photo-p3-720x1440.heic", 720, 1440),
    _photo("photo-alpha-540x960.heic", 540, 960, alpha=True),
]


async def test_iphone_style_heics_end_ready_with_every_variant(
    up: PinholeProcess, session: aiohttp.ClientSession
) -> None:
    accepted = []
    for photo in HEICS:
        status, body = await upload(session, up.url, photo, token=None)
        assert status == 202, body
        accepted.append((photo, body))
    for photo, body in accepted:
        manifest = await wait_ready(session, body["status_url"])
        await verify_ready_image(session, manifest, photo)
    assert up.proc.poll() is None, up.log_tail()


async def test_the_edge_renders_a_signed_size_of_a_heic_on_the_fly(
    up: PinholeProcess, session: aiohttp.ClientSession
) -> None:
    photo = HEICS[1]
    status, body = await upload(session, up.url, photo, token=None)
    assert status in (200, 202), body
    await wait_ready(session, body["status_url"])
    tail = signed_tail(300, 300, "fill-centre", ImageId(body["id"]), Format.WEBP)
    async with session.get(up.url + sign_path(KEY, tail)) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "image/webp"
        image = pyvips.Image.new_from_buffer(await resp.read(), "")
    assert (image.width, image.height) == (300, 300)
    tail = signed_tail(500, 500, "fit", ImageId(body["id"]), Format.JPEG)
    async with session.get(up.url + sign_path(KEY, tail)) as resp:
        assert resp.status == 200, await resp.text()
        image = pyvips.Image.new_from_buffer(await resp.read(), "")
    # Upright (irot applied): portrait, 3024x4032 fitted in 500x500.
    assert (image.width, image.height) == (375, 500)


async def test_a_display_p3_chart_comes_out_srgb_with_the_right_colours(
    up: PinholeProcess, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    chart = p3_chart()
    photo = Photo("p3-chart", chart.heic, chart.p3.width, chart.p3.height, False)
    status, body = await upload(session, up.url, photo, token=None)
    assert status == 202, body
    manifest = await wait_ready(session, body["status_url"])
    assert manifest["status"] == "ready", manifest
    for variant in manifest["variants"]:
        if variant["preset"] != "originals":
            continue
        async with session.get(variant["url"]) as resp:
            assert resp.status == 200
            rendered = await resp.read()
        errors, naive = chart_errors(rendered, chart, tmp_path)
        assert max(errors) < 1.0, (variant["format"], errors)
        assert max(naive) > 3.0, naive


@pytest.mark.parametrize(
    ("name", "code"),
    [("200MP.heic", "image-too-large"), ("corrupted.heic", "undecodable-image")],
)
async def test_hostile_and_broken_heics_get_422(
    up: PinholeProcess, session: aiohttp.ClientSession, name: str, code: str
) -> None:
    async with session.post(
        f"{up.url}/v1/images", data=heif_sample(name), headers={"Content-Type": "image/heic"}
    ) as resp:
        assert resp.status == 422, await resp.text()
        assert (await resp.json())["error"]["code"] == code
