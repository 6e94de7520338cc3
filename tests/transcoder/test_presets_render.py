"""Configured presets on real photos: every preset at its exact size (inside,
cover, by height, a box), the default presets' bytes unchanged by extra ones,
the edge's single render equal to the transcoder's, per-preset quality, lazy
presets left out, and a focal point moving a cover crop so that it holds a
marked region of the photo (and the centre crop does not)."""

from __future__ import annotations

import functools

import pyvips

from pinhole.app.vips import configure_vips
from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import DEFAULT_PRESETS, DEFAULT_TABLE, Format, Preset, PresetTable
from pinhole.settings import Transcode
from tests.support.photos import load_photo
from transcoder.vips_engine import VipsEngine

configure_vips()
PHOTO = "pastelhills-3200x2000.jpg"
AVATAR = Preset("avatar", 256, 256, "cover", "focal")
CARD = Preset("card", 640, 360, "cover", "attention", ("webp", "fallback"))
CENTRE = Preset("square", 300, 300, "cover", "centre")
BOX = Preset("box", 500, 500)
TALL = Preset("tall", None, 400)
LAZY = Preset("later", 100, 100, "cover", lazy=True)
LOW = Preset("low", 736, None, quality=(("avif", 20), ("fallback", 30)))
TABLE = PresetTable((*DEFAULT_PRESETS, AVATAR, CARD, CENTRE, BOX, TALL, LAZY, LOW))
SETTINGS = Transcode(avif_effort=0, render_threads=2)
# The marked region: a red square in the top right of the photo, away from the centre.
MARK = (2700, 300, 200, 200)  # left, top, width, height
FOCAL = ((MARK[0] + MARK[2] / 2) / 3200, (MARK[1] + MARK[3] / 2) / 2000)


def _source(width: int, height: int) -> SourceInfo:
    return SourceInfo(format="jpeg", width=width, height=height, bytes=1, has_alpha=False)


@functools.cache
def _marked() -> bytes:
    image = pyvips.Image.new_from_buffer(load_photo(PHOTO).data, "")
    left, top, w, h = MARK
    marked = image.draw_rect([255, 0, 0], left, top, w, h, fill=True)
    return bytes(marked.write_to_buffer(".jpg", Q=95))


def _red_pixels(body: bytes) -> tuple[int, pyvips.Image]:
    """How many pixels of the decoded variant are the mark's red, and the mask."""
    image = pyvips.Image.new_from_buffer(body, "").colourspace("srgb")
    r, g, b = image[0], image[1], image[2]
    mask = (r > 180) & (g < 90) & (b < 90)
    return round(mask.avg() / 255 * image.width * image.height), mask


def test_every_preset_renders_at_its_exact_size() -> None:
    engine = VipsEngine(SETTINGS, presets=TABLE)
    photo = load_photo(PHOTO)
    rendering = engine.render_ladder(photo.data, _source(photo.width, photo.height))
    got = {(v.preset.name, v.fmt): (v.width, v.height) for v in rendering.variants}
    for v in rendering.variants:
        decoded = pyvips.Image.new_from_buffer(v.body, "")
        assert (decoded.width, decoded.height) == (v.width, v.height), v.preset.name
    assert got[("avatar", Format.AVIF)] == (256, 256)
    assert got[("avatar", Format.JPEG)] == (256, 256)
    assert got[("card", Format.WEBP)] == (640, 360)
    assert ("card", Format.AVIF) not in got  # not among its formats
    assert got[("square", Format.JPEG)] == (300, 300)
    assert got[("box", Format.WEBP)] == (500, 312)  # inside: the wide side fits
    assert got[("tall", Format.JPEG)] == (640, 400)  # by height
    assert not [k for k in got if k[0] == "later"]  # lazy: the edge renders it
    assert got[("736x", Format.AVIF)] == (736, 460)
    # The manifest's planned sizes are the rendered ones.
    for preset, fmt, w, h in TABLE.ladder(photo.width, photo.height, False):
        if not preset.lazy:
            assert got[(preset.name, fmt)] == (w, h), preset.name


def test_extra_presets_leave_the_default_presets_bytes_alone() -> None:
    photo = load_photo("flow-dark-720x1440-portrait.jpg")
    source = _source(photo.width, photo.height)
    default = VipsEngine(SETTINGS, presets=DEFAULT_TABLE).render_ladder(photo.data, source)
    extended = VipsEngine(SETTINGS, presets=TABLE).render_ladder(photo.data, source)
    before = {(v.preset.name, v.fmt): v.body for v in default.variants}
    after = {(v.preset.name, v.fmt): v.body for v in extended.variants}
    assert before == {k: after[k] for k in before}
    assert default.placeholder == extended.placeholder


def test_a_cover_preset_is_the_same_bytes_from_the_edge_and_the_transcoder() -> None:
    engine = VipsEngine(SETTINGS, presets=TABLE)
    data = _marked()
    rendering = engine.render_ladder(data, _source(3200, 2000), focal=FOCAL)
    by_key = {(v.preset.name, v.fmt): v.body for v in rendering.variants}
    for preset in (AVATAR, CARD, BOX, TALL):
        single = engine.render_variant(data, preset, Format.WEBP, False, focal=FOCAL)
        assert single.body == by_key[(preset.name, Format.WEBP)], preset.name
    lazy = engine.render_variant(data, LAZY, Format.JPEG, False)
    assert (lazy.width, lazy.height) == (100, 100)


def test_a_cover_preset_of_a_small_source_crops_without_upscaling() -> None:
    image = pyvips.Image.new_from_buffer(load_photo(PHOTO).data, "").thumbnail_image(200)
    small = bytes(image.write_to_buffer(".jpg", Q=90))  # 200x125
    engine = VipsEngine(SETTINGS, presets=TABLE)
    avatar = engine.render_variant(small, AVATAR, Format.JPEG, False, focal=(0.5, 0.5))
    assert (avatar.width, avatar.height) == (125, 125)
    card = engine.render_variant(small, CARD, Format.JPEG, False)
    assert (card.width, card.height) == (200, 112)


def test_per_preset_quality_overrides_the_setting() -> None:
    engine = VipsEngine(SETTINGS, presets=TABLE)
    data = load_photo(PHOTO).data
    normal = engine.render_variant(data, DEFAULT_PRESETS[2], Format.JPEG, False)
    low = engine.render_variant(data, LOW, Format.JPEG, False)
    assert (low.width, low.height) == (normal.width, normal.height)
    assert len(low.body) < len(normal.body) * 0.6
    webp_normal = engine.render_variant(data, DEFAULT_PRESETS[2], Format.WEBP, False)
    webp_low = engine.render_variant(data, LOW, Format.WEBP, False)
    assert webp_low.body == webp_normal.body  # no WebP override: the setting's


def test_a_focal_point_moves_the_crop_onto_the_marked_region() -> None:
    engine = VipsEngine(SETTINGS, presets=TABLE)
    data = _marked()
    focal = engine.render_variant(data, AVATAR, Format.JPEG, False, focal=FOCAL)
    centre = engine.render_variant(data, CENTRE, Format.JPEG, False)
    # The 2000x2000 crop scaled to 256: the 200 px mark is about 25.6 px square.
    red, mask = _red_pixels(focal.body)
    assert 0.8 * 25.6**2 <= red <= 1.2 * 25.6**2
    # All of it, away from the edges: the crop holds the whole region.
    border = mask.extract_area(0, 0, 256, 2).avg() + mask.extract_area(254, 0, 2, 256).avg()
    assert border == 0
    # The centre crop (x 600..2600 of the photo) misses it altogether.
    assert _red_pixels(centre.body)[0] == 0
    # And the mark sits where the focal point puts it: the crop is as central as
    # the picture allows (clamped to the right edge), so the mark is right of centre.
    columns = [mask.extract_area(x, 0, 1, 256).avg() for x in range(256)]
    marked_columns = [x for x, c in enumerate(columns) if c > 0]
    assert 128 < marked_columns[0] < marked_columns[-1] < 256


def test_fill_focal_renders_crop_around_the_focal_point() -> None:
    engine = VipsEngine(SETTINGS, presets=TABLE)
    data = _marked()
    box = engine.render_box(data, 400, 400, Format.JPEG, False, crop="focal", focal=FOCAL)
    assert (box.width, box.height) == (400, 400)
    assert _red_pixels(box.body)[0] > 0.8 * 40**2
    centred = engine.render_box(data, 400, 400, Format.JPEG, False, crop="centre")
    assert _red_pixels(centred.body)[0] == 0
    # No focal point: the salient part (attention), as gravity "focal" documents.
    unset = engine.render_box(data, 400, 400, Format.JPEG, False, crop="focal")
    attention = engine.render_box(data, 400, 400, Format.JPEG, False, crop="attention")
    assert unset.body == attention.body
