"""On-the-fly renders decode at the smallest scale that gives the box
(shrink-on-load), as strictly as a full decode, upright, never upscaled, with
exactly the size a full decode gives; lazy ladder variants keep the ladder's bytes."""

from __future__ import annotations

import functools

import pytest
import pyvips

from pinhole.app.vips import configure_vips
from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import PRESETS_BY_NAME, Format
from pinhole.errors import UndecodableImage
from pinhole.settings import Limits, Transcode
from tests.support.photos import (
    Photo,
    load_photo,
    photo_path,
    rotated_with_exif,
    transparent_png,
    truncated,
    webp_of,
)
from transcoder.vips_engine import VipsEngine, decode_box, decode_strict, shrink_on_load, to_srgb8

configure_vips()
ENGINE = VipsEngine(Transcode(avif_effort=0, render_threads=1))
METADATA = ("exif-data", "xmp-data", "iptc-data", "icc-profile-data")
PHOTO = "pastelhills-3200x2000.jpg"  # baseline JPEG: 3200x2000


def _decoded(body: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(body, "")


def _full_size_reference(data: bytes, width: int, height: int, crop: str | None) -> pyvips.Image:
    """What render_box did before shrink-on-load: a full decode, then resize."""
    image = decode_strict(data, Limits())
    return image.thumbnail_image(width, height=height, size="down", crop=crop or "none")


def _webp(name: str = PHOTO) -> bytes:
    return webp_of(name).data


@functools.cache
def _source_photo(kind: str) -> Photo:
    """PHOTO as a baseline JPEG, a WebP (scaled decode) or an AVIF (no scaled
    decode: libheif decodes at full size, then the box is made from that)."""
    if kind == "jpeg":
        return load_photo(PHOTO)
    if kind == "webp":
        return webp_of(PHOTO)
    image = pyvips.Image.new_from_file(str(photo_path(PHOTO)))
    data = image.write_to_buffer(".avif", Q=50, effort=0, keep="none")
    return Photo(f"{PHOTO}.avif", data, image.width, image.height, False)


def _psnr(a: pyvips.Image, b: pyvips.Image) -> float:
    import math

    mse = ((a.cast("float") - b.cast("float")) ** 2).avg()
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


def test_the_shrink_on_load_factors_are_those_of_sharp() -> None:
    jpeg = pyvips.Image.new_from_buffer(load_photo(PHOTO).data, "")
    # JPEG: the largest DCT scale not above the shrink (sharp's fastShrinkOnLoad).
    for shrink, factor in ((1.0, None), (1.9, None), (2.0, 2), (3.9, 2), (4, 4), (8, 8), (40, 8)):
        assert shrink_on_load(jpeg, shrink).get("shrink") == factor, shrink
    webp = pyvips.Image.new_from_buffer(_webp(), "")
    assert shrink_on_load(webp, 1.0) == {}
    assert shrink_on_load(webp, 2.5) == {"scale": 0.4}
    png = pyvips.Image.new_from_buffer(transparent_png(PHOTO, 400).data, "")
    assert shrink_on_load(png, 10.0) == {}


@pytest.mark.parametrize("source", ["jpeg", "webp", "avif"])
@pytest.mark.parametrize(
    ("width", "height", "crop"),
    [
        (100, 100, None),  # shrink 32: JPEG by 8, WebP scaled
        (300, 300, None),  # shrink 10.7: JPEG by 8
        (640, 10_000_000, None),  # <w>x0
        (10_000_000, 150, None),  # 0x<h>
        (1000, 1000, None),  # shrink 3.2: JPEG by 2, WebP scaled
        (200, 400, "centre"),
        (300, 120, "attention"),
        (5000, 5000, None),  # larger than the source
        (4000, 1000, "centre"),  # wider than the source: crop, never upscale
    ],
)
def test_box_sizes_are_exactly_those_of_a_full_decode(
    source: str, width: int, height: int, crop: str | None
) -> None:
    data = _source_photo(source).data
    reference = _full_size_reference(data, width, height, crop)
    got = decode_box(data, width, height, False, Limits(), crop=crop)
    assert (got.width, got.height) == (reference.width, reference.height)
    assert got.width <= 3200
    assert got.height <= 2000
    # The same picture (the shrunk decode is a slightly different resample).
    assert _psnr(got, reference) > 32, (source, width, height, crop)


def test_signed_sizes_render_exact_sizes_in_every_format_without_metadata() -> None:
    photo = rotated_with_exif("autumn-2560x1600.jpg", 6)  # upright 2560x1600, with EXIF
    for width, height, crop, expected in (
        (300, 300, None, (300, 188)),
        (300, 10_000_000, None, (300, 188)),
        (10_000_000, 100, None, (160, 100)),
        (200, 400, "attention", (200, 400)),
        (4000, 4000, None, (2560, 1600)),
    ):
        for fmt in (Format.JPEG, Format.WEBP, Format.AVIF):
            v = ENGINE.render_box(photo.data, width, height, fmt, False, crop=crop)
            out = _decoded(v.body)
            assert (out.width, out.height) == (v.width, v.height) == expected, (width, fmt)
            for field in METADATA:
                assert out.get_typeof(field) == 0, (width, fmt, field)
            assert out.get_typeof("orientation") == 0 or out.get("orientation") == 1


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("crop", [None, "centre"])
def test_rotated_photos_come_out_upright_at_a_shrunk_size(
    orientation: int, crop: str | None
) -> None:
    upright = pyvips.Image.new_from_file(str(photo_path(PHOTO)))
    # Stored so that applying ``orientation`` gives back ``upright``.
    stored = {
        2: upright.fliphor(),
        3: upright.rot180(),
        4: upright.flipver(),
        5: upright.rot90().fliphor(),
        6: upright.rot270(),
        7: upright.rot270().fliphor(),
        8: upright.rot90(),
    }[orientation].copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    data = stored.write_to_buffer(".jpg", Q=92, keep="exif")
    # Shrink 16 on a 3200x2000 picture: decoded by 8, resized, turned upright.
    box = (200, 200) if crop is None else (120, 120)
    v = ENGINE.render_box(data, *box, Format.JPEG, False, crop=crop)
    out = _decoded(v.body)
    expected = upright.thumbnail_image(*box[:1], height=box[1], crop=crop or "none")
    assert (out.width, out.height) == (expected.width, expected.height)
    assert out.get_typeof("exif-data") == 0
    # Any missing turn or flip of a real photo is far below this.
    assert _psnr(out, expected) > 30
    wrong = upright.rot180().thumbnail_image(*box[:1], height=box[1], crop=crop or "none")
    assert _psnr(out, wrong) < _psnr(out, expected) - 8


@pytest.mark.parametrize("source", ["jpeg", "webp", "avif"])
@pytest.mark.parametrize("width", [100, 300, 1000])
def test_truncated_or_corrupt_sources_fail_at_every_shrink(source: str, width: int) -> None:
    cut = truncated(_source_photo(source)).data
    if source != "avif":
        # The header still parses: only the (shrunk) decode of the pixels can fail.
        assert pyvips.Image.new_from_buffer(cut, "", fail_on="error").width == 3200
    with pytest.raises(UndecodableImage):
        ENGINE.render_box(cut, width, width, Format.WEBP, False)
    with pytest.raises(UndecodableImage):
        ENGINE.render_box(cut, width, width, Format.JPEG, False, crop="centre")
    # The crop keeps only the top rows, yet the cut-off bottom still fails it.
    with pytest.raises(UndecodableImage):
        ENGINE.render_box(cut, width, width // 4, Format.JPEG, False, crop="centre")
    with pytest.raises(UndecodableImage):
        ENGINE.render_box(b"not an image", width, width, Format.JPEG, False)


def test_alpha_follows_the_plan_at_a_shrunk_size() -> None:
    photo = transparent_png(PHOTO, 1600)
    # Kept (and transparent outside the circle) when the plan has alpha.
    v = ENGINE.render_box(photo.data, 200, 200, Format.PNG, True)
    out = _decoded(v.body)
    assert (out.width, out.height, out.hasalpha()) == (200, 125, True)
    assert out.getpoint(1, 1)[3] == 0
    assert out.getpoint(100, 62)[3] == 255
    # Flattened onto white for an opaque plan.
    v = ENGINE.render_box(photo.data, 200, 200, Format.JPEG, False)
    out = _decoded(v.body)
    assert (out.bands, out.width) == (3, 200)
    assert min(out.getpoint(1, 1)) > 240
    # And added (opaque) to a shrunk opaque WebP source in an alpha plan (a WebP
    # encoder may drop an all-opaque alpha, PNG keeps it).
    v = ENGINE.render_box(_webp(), 200, 200, Format.PNG, True)
    out = _decoded(v.body)
    assert (out.width, out.bands, out[3].min()) == (200, 4, 255)


def test_colour_is_srgb_like_a_full_decode() -> None:
    rgb = pyvips.Image.new_from_file(str(photo_path(PHOTO))).thumbnail_image(1600)
    for image in (rgb.colourspace("b-w"), rgb.icc_export(output_profile="cmyk")):
        data = image.write_to_buffer(".jpg", Q=95)
        got = decode_box(data, 150, 150, False, Limits())
        reference = _full_size_reference(data, 150, 150, None)
        assert (got.interpretation, got.format) == (reference.interpretation, "uchar")
        assert _psnr(got, reference) > 32


def _source(data: bytes) -> SourceInfo:
    header = to_srgb8(pyvips.Image.new_from_buffer(data, "").autorot())
    return SourceInfo(
        format="jpeg", width=header.width, height=header.height, bytes=len(data), has_alpha=False
    )


@pytest.mark.parametrize("stream_above_pixels", [24_000_000, 1_000_000])
def test_lazy_ladder_variants_keep_the_ladder_bytes(stream_above_pixels: int) -> None:
    """Every lazy (preset, format) is byte-for-byte the eager one, on the full
    decode path and on the streaming (shrink-on-load) one for large sources."""
    engine = VipsEngine(
        Transcode(avif_effort=0, render_threads=1, stream_above_pixels=stream_above_pixels)
    )
    data = rotated_with_exif("autumn-2560x1600.jpg", 6).data
    rendering = engine.render_ladder(data, _source(data))
    assert rendering.variants
    for eager in rendering.variants:
        lazy = engine.render_variant(data, eager.preset, eager.fmt, False)
        assert lazy.body == eager.body, (eager.preset.name, eager.fmt, stream_above_pixels)
        assert (lazy.width, lazy.height) == (eager.width, eager.height)
    # The originals WebP the streaming ladder leaves lazy is full size and upright.
    if stream_above_pixels == 1_000_000:
        made = {(v.preset.name, v.fmt) for v in rendering.variants}
        assert ("originals", Format.WEBP) not in made
        v = engine.render_variant(data, PRESETS_BY_NAME["originals"], Format.WEBP, False)
        assert (v.width, v.height) == (2560, 1600)


def test_a_large_rotated_portrait_gets_every_preset_width() -> None:
    """The streaming ladder's shrunk decode of an EXIF-rotated portrait is as wide
    as the widest preset (it once came out as tall, and 1200x was 750 wide)."""
    engine = VipsEngine(Transcode(avif_effort=0, render_threads=1, stream_above_pixels=1_000_000))
    upright = pyvips.Image.new_from_file(str(photo_path(PHOTO))).rot90()  # 2000x3200
    stored = upright.rot270().copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", 6)
    data = stored.write_to_buffer(".jpg", Q=90, keep="exif")
    rendering = engine.render_ladder(data, _source(data))
    widths = {v.preset.name: (v.width, v.height) for v in rendering.variants}
    assert widths == {
        "236x": (236, 378),
        "474x": (474, 758),
        "736x": (736, 1178),
        "1200x": (1200, 1920),
        "originals": (2000, 3200),
    }
    for v in rendering.variants:
        lazy = engine.render_variant(data, v.preset, v.fmt, False)
        assert lazy.body == v.body, (v.preset.name, v.fmt)
