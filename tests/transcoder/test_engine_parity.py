"""The Pillow-SIMD engine renders the same ladder as the vips engine: same
variants, same dimensions, and pictures that look the same (SSIM >= 0.95)."""

from __future__ import annotations

import pytest
import pyvips

from pinhole.app.vips import configure_vips
from pinhole.app.wiring import build_components
from pinhole.domain.job import SourceInfo
from pinhole.settings import Settings, Transcode
from tests.support.photos import Photo, load_photo, rotated_with_exif, transparent_png
from transcoder.pillow_engine import PillowEngine
from transcoder.quality import ssim
from transcoder.vips_engine import VipsEngine

configure_vips()
SETTINGS = Transcode(avif_effort=0, render_threads=2)
VIPS = VipsEngine(SETTINGS)
PILLOW = PillowEngine(SETTINGS)


def _photos() -> list[Photo]:
    return [
        load_photo("autumn-2560x1600.jpg"),
        load_photo("kay-dark-1080x1920-alpha.png"),
        rotated_with_exif("flow-dark-720x1440-portrait.jpg"),
        transparent_png("pastelhills-3200x2000.jpg", width=700),
    ]


@pytest.mark.parametrize("photo", _photos(), ids=lambda p: p.name)
def test_both_engines_render_the_same_ladder(photo: Photo) -> None:
    source = SourceInfo(
        format="jpeg",
        width=photo.width,
        height=photo.height,
        bytes=len(photo.data),
        has_alpha=photo.has_alpha,
    )
    by_vips = VIPS.render_ladder(photo.data, source)
    by_pillow = PILLOW.render_ladder(photo.data, source)
    assert [(v.preset, v.fmt) for v in by_vips.variants] == [
        (v.preset, v.fmt) for v in by_pillow.variants
    ]
    for a, b in zip(by_vips.variants, by_pillow.variants, strict=True):
        where = f"{photo.name} {a.preset.name} {a.fmt.value}"
        image_a = pyvips.Image.new_from_buffer(a.body, "")
        image_b = pyvips.Image.new_from_buffer(b.body, "")
        assert (image_a.width, image_a.height) == (image_b.width, image_b.height), where
        assert (a.width, a.height) == (b.width, b.height) == (image_a.width, image_a.height)
        score = ssim(image_a, image_b)
        assert score >= 0.95, (where, score)
    assert by_pillow.placeholder.thumbhash is not None


def test_settings_choose_the_engine() -> None:
    from pinhole.app.runtime import build_render_engine

    settings = Settings(storage="file:///tmp/pinhole-parity", queue="memory://")
    build_components(settings)  # the engine choice needs nothing else
    assert isinstance(build_render_engine(settings), VipsEngine)
    settings.transcode.engine = "pillow"
    assert isinstance(build_render_engine(settings), PillowEngine)
