"""Animated GIF and WebP through the libvips ladder: every preset's WebP and GIF
keep every frame at one size, the delays and the loop; AVIF and JPEG/PNG are the
first frame (the poster). Inputs: animations made from real photos, and real
ones from Pillow's test images (its sdist on PyPI)."""

from __future__ import annotations

import pytest
import pyvips

from pinhole.app.vips import configure_vips
from pinhole.domain.ids import ImageId
from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import ANIMATED_FORMATS, PRESETS, Format, ladder
from pinhole.domain.manifest import Manifest, Status
from pinhole.errors import ImageTooLarge
from pinhole.settings import Limits, Transcode
from tests.support.animations import (
    Animated,
    distinct_frames,
    frames_of,
    package_animation,
    panning,
)
from transcoder.vips_engine import VipsEngine

configure_vips()
ENGINE = VipsEngine(Transcode(avif_effort=0, render_threads=2))
PHOTO = "pastelhills-3200x2000.jpg"


def _source(data: bytes, fmt: str) -> SourceInfo:
    header = pyvips.Image.new_from_buffer(data, "")
    return SourceInfo(
        format=fmt,
        width=header.width,
        height=header.height,
        bytes=len(data),
        has_alpha=bool(header.hasalpha()),
        frames=int(header.get("n-pages")),
    )


def _read(body: bytes, fmt: Format) -> pyvips.Image:
    options = {"n": -1} if fmt in ANIMATED_FORMATS else {}
    return pyvips.Image.new_from_buffer(body, "", **options)


def _timeline(image: pyvips.Image) -> int:
    """How long one loop plays: browsers play a GIF delay of 10 ms or less as
    100 ms, and libvips writes such a delay into WebP as 100 ms."""
    return sum(d if d > 10 else 100 for d in image.get("delay"))


@pytest.mark.parametrize(
    "made",
    [
        panning(PHOTO, 800, 450, 24, fmt="gif", loop=3),
        panning(PHOTO, 640, 400, 16, fmt="webp", alpha=True),
    ],
    ids=lambda a: a.name,
)
def test_made_animations_keep_every_frame_delay_and_loop(made: Animated) -> None:
    source = _source(made.data, made.name.rsplit(".", 1)[1])
    assert source.animated
    rendering = ENGINE.render_ladder(made.data, source)
    planned = ladder(source.width, source.height, source.has_alpha, animated=True)
    assert [(v.preset, v.fmt) for v in rendering.variants] == [(p, f) for p, f, _, _ in planned]
    assert rendering.animation is not None
    assert rendering.animation.frames == made.frames
    assert rendering.animation.delays_ms == list(made.delays_ms)
    assert rendering.animation.duration_ms == sum(made.delays_ms)
    assert rendering.animation.loop == made.loop
    first_frame = pyvips.Image.new_from_buffer(made.data, "")
    for v, (_, _, width, height) in zip(rendering.variants, planned, strict=True):
        where = f"{v.preset.name}.{v.fmt.value}"
        image = _read(v.body, v.fmt)
        assert (v.width, abs(v.height - height) <= 1) == (width, True), where
        if v.fmt in ANIMATED_FORMATS:
            # Every frame (each differs from the one before), all one size.
            assert image.get("n-pages") == made.frames, where
            assert image.get("page-height") == v.height, where
            assert image.height == v.height * made.frames, where
            assert list(image.get("delay")) == list(made.delays_ms), where
            assert image.get("loop") == made.loop, where
            assert distinct_frames(v.body) == made.frames, where
        else:
            # The poster: one frame, the first (compared at a small size).
            assert image.get_typeof("n-pages") == 0 or image.get("n-pages") == 1, where
            assert (image.width, image.height) == (v.width, v.height), where
            small = image.thumbnail_image(64, height=64).flatten(background=0)
            want = first_frame.thumbnail_image(64, height=64).flatten(background=0)
            assert abs(small.avg() - want.avg()) < 4, where
            assert (small - want).abs().avg() < 8, where


@pytest.mark.parametrize("name", ["chi.gif", "iss634.gif", "iss634.webp", "dispose_bgnd.gif"])
def test_real_animations_keep_their_timeline(name: str) -> None:
    data = package_animation(name)
    source = _source(data, name.rsplit(".", 1)[1])
    original = pyvips.Image.new_from_buffer(data, "", n=-1)
    rendering = ENGINE.render_ladder(data, source)
    assert rendering.animation is not None
    assert rendering.animation.frames == source.frames
    assert rendering.animation.delays_ms == list(original.get("delay"))
    animated = [v for v in rendering.variants if v.fmt in ANIMATED_FORMATS]
    assert {(v.preset, v.fmt) for v in animated} == {
        (p, f) for p in PRESETS for f in ANIMATED_FORMATS
    }
    for v in animated:
        image = _read(v.body, v.fmt)
        where = f"{name} {v.preset.name}.{v.fmt.value}"
        # Identical neighbouring frames are merged into one longer frame by the
        # encoders; the distinct frames and the whole timeline stay.
        assert image.get("n-pages") >= distinct_frames(data), where
        assert _timeline(image) == _timeline(original), where
        assert image.get("loop") == original.get("loop"), where
        assert image.width == v.width, where
        assert image.get("page-height") == v.height, where


def test_the_edge_renders_a_missing_animated_variant_like_the_ladder() -> None:
    made = panning(PHOTO, 500, 300, 8)
    source = _source(made.data, "gif")
    by_key = {(v.preset, v.fmt): v for v in ENGINE.render_ladder(made.data, source).variants}
    for preset in (PRESETS[0], PRESETS[-1]):
        for fmt in (Format.WEBP, Format.GIF, Format.PNG):
            alone = ENGINE.render_variant(made.data, preset, fmt, source.has_alpha)
            assert alone.body == by_key[(preset, fmt)].body, f"{preset.name}.{fmt.value}"


def test_the_transcoder_refuses_too_many_pixels_over_all_frames() -> None:
    made = panning(PHOTO, 200, 100, 10)
    engine = VipsEngine(Transcode(avif_effort=0), Limits(max_animation_pixels=199_999))
    with pytest.raises(ImageTooLarge, match="200000 pixels over 10 frames"):
        engine.render_ladder(made.data, _source(made.data, "gif"))
    with pytest.raises(ImageTooLarge, match="200000 pixels over 10 frames"):
        engine.render_variant(made.data, PRESETS[0], Format.GIF, True)
    frames = VipsEngine(Transcode(avif_effort=0), Limits(max_frames=9))
    with pytest.raises(ImageTooLarge, match="10 frames exceed"):
        frames.render_ladder(made.data, _source(made.data, "gif"))


def test_the_manifest_says_animated_and_gives_poster_urls() -> None:
    made = panning(PHOTO, 500, 300, 8)
    source = _source(made.data, "gif")
    rendering = ENGINE.render_ladder(made.data, source)
    manifest = Manifest(
        id=ImageId("0" * 32),
        status=Status.READY,
        source=source,
        created_at=1.0,
        updated_at=2.0,
        animation=rendering.animation,
    )
    view = Manifest.decode(manifest.encode()).public_view("https://img.test", "https://api.test")
    assert view["animated"] is True
    animation = view["animation"]
    assert (animation["frames"], animation["duration_ms"], animation["loop"]) == (
        8,
        sum(made.delays_ms),
        0,
    )
    fan = "00/00/00/" + "0" * 32
    assert animation["poster"]["236x"] == f"https://img.test/236x/{fan}.png"
    assert animation["poster_avif"]["originals"] == f"https://img.test/originals/{fan}.avif"
    assert {v["format"] for v in view["variants"]} == {"avif", "webp", "png", "gif"}
    assert view["urls"]["474x"] == f"https://img.test/474x/{fan}"


def test_frames_of_a_made_animation_differ() -> None:
    made = panning(PHOTO, 120, 80, 5)
    assert len(frames_of(made.data)) == 5 == distinct_frames(made.data)
