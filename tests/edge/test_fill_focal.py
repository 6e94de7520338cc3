"""Signed ``fill-focal`` sizes on a real edge: the box is cropped around the
image's focal point from its manifest (a marked region of a photo ends up in
the crop), and an image without one gets the ``fill-attention`` crop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pyvips

from pinhole.domain.ids import ImageId
from pinhole.domain.ladder import Format
from pinhole.domain.manifest import Focal
from pinhole.manifests import load_manifest, save_manifest
from server.signing import sign_path, signed_tail
from tests.support.edge import RunningEdge, edge_settings, get, running_edge
from tests.support.photos import Photo, load_photo
from tests.support.seed import seed_image

KEY = "fill-focal-key"
MARK = (2700, 300, 200, 200)  # a red square, top right of the 3200x2000 photo


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[RunningEdge]:
    async with running_edge(edge_settings(tmp_path, signing_keys=[KEY])) as running:
        yield running


def _marked(quality: int) -> Photo:
    photo = load_photo("pastelhills-3200x2000.jpg")
    image = pyvips.Image.new_from_buffer(photo.data, "")
    data = bytes(image.draw_rect([255, 0, 0], *MARK, fill=True).write_to_buffer(".jpg", Q=quality))
    return Photo(photo.name, data, photo.width, photo.height, False)


def _red(body: bytes) -> float:
    image = pyvips.Image.new_from_buffer(body, "").colourspace("srgb")
    return float(((image[0] > 180) & (image[1] < 90) & (image[2] < 90)).avg()) / 255


async def _signed(
    session: aiohttp.ClientSession, edge: RunningEdge, image_id: ImageId, fit: str
) -> bytes:
    tail = signed_tail(400, 400, fit, image_id, Format.JPEG)
    status, _, body = await get(session, edge.url + sign_path(KEY, tail))
    assert status == 200, body
    return body


async def test_fill_focal_crops_around_the_manifests_focal_point(
    edge: RunningEdge, session: aiohttp.ClientSession
) -> None:
    store = edge.components.store
    photo = _marked(95)
    image_id = await seed_image(store, photo)
    manifest = await load_manifest(store, image_id)
    assert manifest is not None
    focal = Focal(x=(MARK[0] + 100) / 3200, y=(MARK[1] + 100) / 2000)
    await save_manifest(store, manifest.model_copy(update={"focal": focal}))

    on_mark = await _signed(session, edge, image_id, "fill-focal")
    assert pyvips.Image.new_from_buffer(on_mark, "").width == 400
    assert 0.005 < _red(on_mark) < 0.02  # the 200 px mark of a 2000 px square crop
    assert _red(await _signed(session, edge, image_id, "fill-centre")) == 0

    # Without a focal point, fill-focal is the attention crop.
    other = await seed_image(store, _marked(94))
    assert await _signed(session, edge, other, "fill-focal") == await _signed(
        session, edge, other, "fill-attention"
    )
