"""The ladder does each piece of work once: presets as wide as the source or
wider share its pixels, so each of their formats is encoded once, and the
lazy variants the edge renders are still byte-for-byte the ladder's."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pyvips

from pinhole.app.vips import configure_vips
from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import PRESETS, Format, Preset
from pinhole.ports import RenderedVariant
from pinhole.settings import Transcode
from tests.support.photos import load_photo, rotated_with_exif
from transcoder.engine import encode_largest_first
from transcoder.pillow_engine import PillowEngine
from transcoder.vips_engine import VipsEngine

configure_vips()
SETTINGS = Transcode(avif_effort=0, render_threads=2)


def _source(data: bytes, has_alpha: bool = False) -> SourceInfo:
    header = pyvips.Image.new_from_buffer(data, "").autorot()
    return SourceInfo(
        format="jpeg",
        width=header.width,
        height=header.height,
        bytes=len(data),
        has_alpha=has_alpha,
    )


def test_the_same_pixels_in_the_same_format_are_encoded_once() -> None:
    """Real encodes, counted: two presets sharing one image object get one
    encode per format; a different object of the same size is encoded apart."""
    shared = pyvips.Image.xyz(64, 48)[0].cast("uchar")
    other = pyvips.Image.xyz(64, 48)[1].cast("uchar")
    made: list[tuple[str, Format]] = []
    lock = threading.Lock()

    def encode(preset: Preset, fmt: Format, image: pyvips.Image) -> RenderedVariant:
        with lock:
            made.append((preset.name, fmt))
        body = image.write_to_buffer(".jpg" if fmt is Format.JPEG else ".webp")
        return RenderedVariant(preset, fmt, image.width, image.height, body, 0.0)

    a, b, c = Preset("a", 100), Preset("b", 200), Preset("c", None)
    jobs = [
        (p, f, im)
        for p, im in ((a, other), (b, shared), (c, shared))
        for f in (Format.WEBP, Format.JPEG)
    ]
    with ThreadPoolExecutor(2) as pool:
        out = encode_largest_first(pool, encode, jobs)
    assert sorted(made) == sorted(
        [("a", Format.WEBP), ("a", Format.JPEG), ("b", Format.WEBP), ("b", Format.JPEG)]
    )
    assert [(v.preset, v.fmt) for v in out] == [(p, f) for p, f, _ in jobs]
    by = {(v.preset.name, v.fmt): v.body for v in out}
    assert by["b", Format.WEBP] == by["c", Format.WEBP]
    assert by["b", Format.JPEG] == by["c", Format.JPEG]
    assert by["a", Format.JPEG] != by["b", Format.JPEG]


def test_presets_wider_than_a_small_source_share_one_encode_and_the_edge_agrees() -> None:
    """A 720 px wide portrait: 736x, 1200x and originals are the source size,
    one encode per format for the three, and what render_variant gives for each."""
    engine = VipsEngine(SETTINGS)
    data = rotated_with_exif("flow-dark-720x1440-portrait.jpg").data
    rendering = engine.render_ladder(data, _source(data))
    by = {(v.preset.name, v.fmt): v for v in rendering.variants}
    assert len(by) == len(PRESETS) * 3
    for fmt in (Format.AVIF, Format.WEBP, Format.JPEG):
        bodies = {by[name, fmt].body for name in ("736x", "1200x", "originals")}
        assert len(bodies) == 1, fmt
        # One encode made all three (apart, their timings would differ).
        assert len({by[name, fmt].seconds for name in ("736x", "1200x", "originals")}) == 1
        assert {(by[n, fmt].width, by[n, fmt].height) for n in ("736x", "1200x", "originals")} == {
            (720, 1440)
        }
        assert by["474x", fmt].body != by["736x", fmt].body
    for v in rendering.variants:
        lazy = engine.render_variant(data, v.preset, v.fmt, False)
        assert lazy.body == v.body, (v.preset.name, v.fmt)


def test_the_pillow_engine_shares_encodes_too() -> None:
    engine = PillowEngine(SETTINGS)
    photo = load_photo("kay-dark-1080x1920-alpha.png")
    rendering = engine.render_ladder(photo.data, _source(photo.data, has_alpha=True))
    by = {(v.preset.name, v.fmt): v for v in rendering.variants}
    for fmt in (Format.WEBP, Format.PNG):
        assert by["1200x", fmt].body == by["originals", fmt].body
        assert by["1200x", fmt].seconds == by["originals", fmt].seconds
        assert (by["1200x", fmt].width, by["1200x", fmt].height) == (1080, 1920)
