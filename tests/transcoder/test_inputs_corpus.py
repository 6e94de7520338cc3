"""A corpus of generated inputs, one per real-world case, through both engines.

Every output is decoded again and checked: format, exact width (never
upscaled), height from the aspect ratio, 8-bit sRGB or grey, alpha kept where
the plan has alpha, no metadata, and pixels that still look like the input
(colour-managed inputs come out in sRGB; an animated one keeps its frames in
WebP and GIF, and its AVIF and PNG posters show the first frame).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import pyvips

from pinhole.app.vips import configure_vips
from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import ANIMATED_FORMATS, PRESETS, Format, formats_for
from pinhole.errors import ImageTooLarge, UndecodableImage
from pinhole.ports import LadderEngine
from pinhole.settings import Limits, Transcode
from tests.support.icc import adobe_rgb_profile
from transcoder.pillow_engine import PillowEngine
from transcoder.vips_engine import VipsEngine

configure_vips()
SETTINGS = Transcode(avif_effort=0, render_threads=2)
ENGINES: dict[str, LadderEngine] = {
    "vips": VipsEngine(SETTINGS),
    "pillow": PillowEngine(SETTINGS),
}
METADATA = ("exif-data", "xmp-data", "iptc-data", "icc-profile-data")
LOADERS = {Format.AVIF: "heifload", Format.WEBP: "webpload", Format.JPEG: "jpegload"}
LOADERS[Format.PNG] = "pngload"
LOADERS[Format.GIF] = "gifload"
# The colour every case paints its upper-left quarter with, in sRGB (inside the
# CMYK gamut, so the CMYK case can round-trip it).
RED = (180, 80, 70)


def _scene(width: int = 640, height: int = 400) -> pyvips.Image:
    """A gradient with a flat red upper-left quarter: colours can be checked."""
    xy = pyvips.Image.xyz(width, height)
    r = (xy[0] * 255 / width).cast("uchar")
    g = (xy[1] * 255 / height).cast("uchar")
    image = r.bandjoin([g, (r + g) / 2]).cast("uchar").copy(interpretation="srgb")
    patch = pyvips.Image.black(width // 2, height // 2).new_from_image(list(RED)).cast("uchar")
    return image.insert(patch.copy(interpretation="srgb"), 0, 0)


def _with_alpha(image: pyvips.Image) -> pyvips.Image:
    xy = pyvips.Image.xyz(image.width, image.height)
    # Opaque left half, fading towards transparent on the right.
    fade = 255 - (xy[0] - image.width / 2) * 400 / image.width
    alpha = (xy[0] < image.width / 2).ifthenelse(255, fade).cast("uchar")
    return image.bandjoin(alpha)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    # Colour of the upper-left quarter after decoding, if checked (RGB or grey).
    colour: tuple[int, ...] | None = RED
    tolerance: int = 14


def _grey_value() -> int:
    return round(float(_scene().colourspace("b-w").crop(0, 0, 320, 200)[0].avg()))


def _animated_gif() -> bytes:
    first = _scene(200, 120)
    second = pyvips.Image.black(200, 120, bands=3).new_from_image([0, 0, 255]).cast("uchar")
    frames = [first, second.copy(interpretation="srgb")]
    strip = pyvips.Image.arrayjoin(frames, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 120)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100, 100])
    data: bytes = strip.write_to_buffer(".gif")
    return data


CASES = [
    Case("baseline-jpeg", lambda: _scene().write_to_buffer(".jpg", Q=92)),
    Case("progressive-jpeg", lambda: _scene().write_to_buffer(".jpg", Q=92, interlace=True)),
    Case(
        "cmyk-jpeg",
        lambda: _scene().icc_export(output_profile="cmyk").write_to_buffer(".jpg", Q=95),
        tolerance=24,
    ),
    Case(
        "display-p3-jpeg",
        lambda: _scene().icc_export(output_profile="p3").write_to_buffer(".jpg", Q=95),
    ),
    Case(
        "display-p3-png",
        lambda: _scene().icc_export(output_profile="p3").write_to_buffer(".png"),
    ),
    Case("adobe-rgb-jpeg", lambda: _adobe_rgb(_scene()).write_to_buffer(".jpg", Q=95)),
    Case(
        "adobe-rgb-16-bit-png",
        lambda: _adobe_rgb(_scene(), depth=16).write_to_buffer(".png"),
    ),
    Case("rgb-16-bit-png", lambda: _scene().colourspace("rgb16").write_to_buffer(".png")),
    Case(
        "grey-16-bit-png",
        lambda: _scene().colourspace("grey16").write_to_buffer(".png"),
        colour=None,
    ),
    Case("palette-png", lambda: _scene().write_to_buffer(".png", palette=True), tolerance=24),
    Case(
        "palette-png-alpha",
        lambda: _with_alpha(_scene()).write_to_buffer(".png", palette=True),
        tolerance=24,
    ),
    Case("rgba-png", lambda: _with_alpha(_scene()).write_to_buffer(".png")),
    Case(
        "grey-jpeg",
        lambda: _scene().colourspace("b-w").write_to_buffer(".jpg", Q=95),
        colour=None,
    ),
    Case(
        "grey-alpha-png",
        lambda: _with_alpha(_scene().colourspace("b-w")).write_to_buffer(".png"),
        colour=None,
    ),
    Case("webp-lossy", lambda: _scene().write_to_buffer(".webp", Q=90)),
    Case("webp-alpha", lambda: _with_alpha(_scene()).write_to_buffer(".webp", lossless=True)),
    Case("avif", lambda: _scene().write_to_buffer(".avif", Q=80, effort=0), tolerance=20),
    Case(
        "avif-alpha",
        lambda: _with_alpha(_scene()).write_to_buffer(".avif", Q=80, effort=0),
        tolerance=20,
    ),
    Case("gif", lambda: _scene().write_to_buffer(".gif"), tolerance=30),
    Case("animated-gif-first-frame", _animated_gif, tolerance=30),
    Case(
        "exif-gps-xmp-jpeg",
        lambda: _tagged(_scene()).write_to_buffer(".jpg", Q=92, keep="all"),
    ),
]


def _adobe_rgb(image: pyvips.Image, depth: int = 8) -> pyvips.Image:
    """Pixels in Adobe RGB with the profile embedded. Read as sRGB, the red patch
    would be off by about 24: the colour check below catches an ignored profile."""
    with tempfile.NamedTemporaryFile(suffix=".icc") as profile:
        profile.write(adobe_rgb_profile())
        profile.flush()
        return image.icc_export(output_profile=profile.name, depth=depth).copy_memory()


def _tagged(image: pyvips.Image) -> pyvips.Image:
    image = image.copy()
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Artist", "someone")
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd3-GPSLatitudeRef", "N")
    image.set_type(
        pyvips.GValue.blob_type,
        "xmp-data",
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><secret>gps</secret></x:xmpmeta>',
    )
    return image


def _source(data: bytes) -> SourceInfo:
    """What ingest would have learned from the header."""
    header = pyvips.Image.new_from_buffer(data, "")
    return SourceInfo(
        format=str(header.get("vips-loader")).removesuffix("_buffer").removesuffix("load"),
        width=header.width,
        height=header.height,
        bytes=len(data),
        has_alpha=bool(header.hasalpha()),
        frames=header.get("n-pages") if header.get_typeof("n-pages") else 1,
    )


def _upper_left(image: pyvips.Image) -> tuple[float, ...]:
    if image.hasalpha():
        image = image.flatten(background=255)
    w, h = image.width, image.height
    patch = image.crop(w // 16, h // 16, w * 6 // 16, h * 6 // 16)
    return tuple(patch[band].avg() for band in range(patch.bands))


@pytest.mark.parametrize("engine_name", sorted(ENGINES))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_input_renders_a_correct_ladder(case: Case, engine_name: str) -> None:
    data = case.make()
    source = _source(data)
    header = pyvips.Image.new_from_buffer(data, "")
    transparent = bool(header.hasalpha()) and header[header.bands - 1].min() < 255
    rendering = ENGINES[engine_name].render_ladder(data, source)
    expected_formats = formats_for(source.has_alpha, source.animated)
    assert [(v.preset, v.fmt) for v in rendering.variants] == [
        (p, f) for p in PRESETS for f in expected_formats
    ]
    for v in rendering.variants:
        where = f"{case.name} {engine_name} {v.preset.name} {v.fmt.value}"
        out = pyvips.Image.new_from_buffer(v.body, "")
        assert str(out.get("vips-loader")).startswith(LOADERS[v.fmt]), where
        width = v.preset.target_width(source.width)
        assert out.width == v.width == width, where
        assert abs(out.height - source.height * width / source.width) <= 1, where
        assert out.height == v.height, where
        assert out.format == "uchar", where
        assert out.interpretation in ("srgb", "b-w"), where
        if transparent:
            assert out.hasalpha(), where
        elif not source.has_alpha:
            assert not out.hasalpha(), where
        # (An all-opaque alpha band may be dropped by an encoder: that is fine.)
        for field in METADATA:
            assert out.get_typeof(field) == 0, (where, field)
        # No GPS or other EXIF tag survives in any form.
        assert not [f for f in out.get_fields() if f.startswith(("exif-", "xmp", "iptc"))], where
        if out.get_typeof("n-pages"):
            frames = source.frames if v.fmt in ANIMATED_FORMATS else 1
            assert out.get("n-pages") == frames, where
        if case.colour is not None and v.preset.name in ("474x", "originals"):
            got = _upper_left(out)
            want = case.colour if out.bands >= 3 else (_grey_value(),)
            assert all(abs(g - w) <= case.tolerance for g, w in zip(got, want, strict=False)), (
                where,
                got,
                want,
            )


@pytest.mark.parametrize("engine_name", sorted(ENGINES))
def test_grey_inputs_stay_grey_looking(engine_name: str) -> None:
    data = _scene().colourspace("b-w").write_to_buffer(".jpg", Q=95)
    rendering = ENGINES[engine_name].render_ladder(data, _source(data))
    for v in rendering.variants:
        out = pyvips.Image.new_from_buffer(v.body, "")
        if out.bands >= 3:
            r, g, b = (out[band].avg() for band in range(3))
            assert abs(r - g) < 3, (v.preset.name, v.fmt)
            assert abs(g - b) < 3, (v.preset.name, v.fmt)
        want = _grey_value()
        got = _upper_left(out.colourspace("b-w"))[0]
        assert abs(got - want) < 10, (v.preset.name, v.fmt, got, want)


@pytest.mark.parametrize("engine_name", sorted(ENGINES))
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".gif", ".avif"])
def test_truncated_inputs_fail_as_undecodable(engine_name: str, suffix: str) -> None:
    data = _scene().write_to_buffer(suffix)
    with pytest.raises(UndecodableImage):
        ENGINES[engine_name].render_ladder(data[: len(data) * 2 // 3], _source(data))


@pytest.mark.parametrize("engine_name", sorted(ENGINES))
def test_garbage_fails_as_undecodable(engine_name: str) -> None:
    good = _scene().write_to_buffer(".png")
    with pytest.raises(UndecodableImage):
        ENGINES[engine_name].render_ladder(b"\x89PNG\r\n\x1a\n" + b"\0" * 200, _source(good))


@pytest.mark.parametrize("engine", ["vips", "pillow"])
def test_over_limits_inputs_fail_as_too_large(engine: str) -> None:
    limits = Limits(max_pixels=100_000, max_frames=1)
    chosen: LadderEngine = (
        VipsEngine(SETTINGS, limits) if engine == "vips" else PillowEngine(SETTINGS, limits)
    )
    big = _scene(640, 400).write_to_buffer(".png")
    with pytest.raises(ImageTooLarge):
        chosen.render_ladder(big, _source(big))
    animated = _animated_gif()
    with pytest.raises(ImageTooLarge):
        chosen.render_ladder(animated, _source(animated))
