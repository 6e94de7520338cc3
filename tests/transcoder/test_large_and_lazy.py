"""Large sources stream in bounded memory; lazy variants are left to the edge
but still listed (with URLs) in the manifest's public view."""

from __future__ import annotations

import time

import pytest
import pyvips

from pinhole.app.vips import configure_vips
from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import PRESETS, Format
from pinhole.domain.manifest import Manifest, Status, Variant
from pinhole.errors import UndecodableImage
from pinhole.settings import Transcode
from transcoder.pillow_engine import PillowEngine
from transcoder.vips_engine import VipsEngine

configure_vips()
# Anything over 0.1 MP takes the streaming path here.
STREAMING = VipsEngine(Transcode(avif_effort=0, stream_above_pixels=100_000))


def _photo(width: int = 1600, height: int = 1000) -> pyvips.Image:
    xy = pyvips.Image.xyz(width, height)
    r = (xy[0] * 255 / width).cast("uchar")
    g = (xy[1] * 255 / height).cast("uchar")
    return r.bandjoin([g, 128]).cast("uchar").copy(interpretation="srgb")


def _source(data: bytes) -> SourceInfo:
    header = pyvips.Image.new_from_buffer(data, "").autorot()
    return SourceInfo(
        format="jpeg",
        width=header.width,
        height=header.height,
        bytes=len(data),
        has_alpha=bool(header.hasalpha()),
    )


@pytest.mark.parametrize("orientation", [1, 6])
def test_streaming_renders_every_eager_variant_upright(orientation: int) -> None:
    upright = _photo()
    stored = upright if orientation == 1 else upright.rot270()
    stored = stored.copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    data = stored.write_to_buffer(".jpg", Q=90, keep="exif")
    rendering = STREAMING.render_ladder(data, _source(data))
    got = {(v.preset.name, v.fmt): v for v in rendering.variants}
    # Originals WebP/AVIF are left to the edge for sources this large.
    assert ("originals", Format.WEBP) not in got
    assert ("originals", Format.AVIF) not in got
    assert len(got) == 13
    for (preset, fmt), v in got.items():
        out = pyvips.Image.new_from_buffer(v.body, "")
        width = {"236x": 236, "474x": 474, "736x": 736, "1200x": 1200}.get(preset, 1600)
        assert (out.width, out.height) == (v.width, v.height), (preset, fmt)
        assert out.width == width, (preset, fmt)
        assert abs(out.height - 1000 * width / 1600) <= 1, (preset, fmt)
        assert out.get_typeof("exif-data") == 0
        # Upright: dark top-left (red and green low), bright bottom-right.
        assert out.getpoint(2, 2)[0] < 40, (preset, fmt)
        assert out.getpoint(out.width - 3, out.height - 3)[1] > 200, (preset, fmt)
    assert rendering.placeholder.thumbhash


def test_streaming_keeps_truncated_inputs_failing() -> None:
    data = _photo().write_to_buffer(".jpg", Q=90)
    with pytest.raises(UndecodableImage):
        STREAMING.render_ladder(data[: len(data) // 2], _source(data))


@pytest.mark.parametrize("engine", ["vips", "pillow"])
def test_lazy_variants_are_skipped_and_still_listed(engine: str) -> None:
    settings = Transcode(avif_effort=0, lazy_variants=["originals.avif", "1200x.avif"])
    chosen = VipsEngine(settings) if engine == "vips" else PillowEngine(settings)
    data = _photo(1300, 800).write_to_buffer(".jpg", Q=90)
    source = _source(data)
    rendering = chosen.render_ladder(data, source)
    rendered = {(v.preset.name, v.fmt) for v in rendering.variants}
    assert len(rendered) == 13
    assert ("originals", Format.AVIF) not in rendered
    assert ("1200x", Format.AVIF) not in rendered
    now = time.time()
    manifest = Manifest(
        id=image_id_for_bytes(data),
        status=Status.READY,
        source=source,
        created_at=now,
        updated_at=now,
        variants=[
            Variant(preset=v.preset.name, format=v.fmt, width=v.width, height=v.height, bytes=1)
            for v in rendering.variants
        ],
    )
    view = manifest.public_view("http://edge", "http://ingest")
    assert len(view["variants"]) == len(PRESETS) * 3
    lazy = [v for v in view["variants"] if v["bytes"] is None]
    assert sorted((v["preset"], v["format"]) for v in lazy) == [
        ("1200x", "avif"),
        ("originals", "avif"),
    ]
    assert all(v["url"].endswith(".avif") for v in lazy)
