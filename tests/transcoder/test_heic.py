"""HEVC-coded HEIF (HEIC) through the transcoder's engines, on real files: iPhone
grid photos with depth maps and irot, a Canon 10-bit grid photo, Nokia's burst and
alpha-overlay conformance files, pillow-heif's 8/10/12-bit and alpha files, and
HEICs heif-enc made from the real photographs (scripts/fetch-heif-samples.sh)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pi_heif
import pytest
import pyvips

import transcoder.heif
from pinhole.app.vips import configure_vips
from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import PRESETS, Format, formats_for
from pinhole.errors import ImageTooLarge, UndecodableImage
from pinhole.settings import Limits, Transcode
from tests.support.heif import chart_errors, heif_enc, heif_sample, p3_chart, p3_profile
from tests.support.photos import photo_path
from transcoder.pillow_engine import PillowEngine
from transcoder.vips_engine import VipsEngine, decodable, decode_strict

configure_vips()
SETTINGS = Transcode(avif_effort=0, render_threads=2)
LIMITS = Limits()
LOADERS = {
    Format.AVIF: "heifload",
    Format.WEBP: "webpload",
    Format.JPEG: "jpegload",
    Format.PNG: "pngload",
}


@dataclass(frozen=True)
class Case:
    name: str
    # Upright size, after irot; whether the primary image has alpha; what it shows.
    width: int
    height: int
    has_alpha: bool
    what: str


CASES = [
    Case("pug.heic", 4032, 3024, False, "iPhone: 49-tile grid, P3 ICC, depth map"),
    Case("arrow.heic", 3024, 4032, False, "iPhone: 48-tile grid, irot 270°, P3 ICC"),
    Case("guitar_cw90.hif", 4672, 7008, False, "Canon: 10-bit grid, irot 90°, 33 MP"),
    Case("aux_YCbCr.heic", 4000, 1848, False, "grid with auxiliary images and a gain map"),
    Case("alpha.heic", 1440, 960, False, "Nokia: 3 images, the primary is the last"),
    Case("bird_burst.heic", 1280, 720, False, "Nokia: a burst of 4"),
    Case("RGB_8__29x100.heif", 29, 100, False, "8-bit, odd width"),
    Case("RGB_10__29x100.heif", 29, 100, False, "10-bit"),
    Case("RGBA_8__128x128.heif", 128, 128, True, "8-bit with alpha"),
    Case("RGBA_10__128x128.heif", 128, 128, True, "10-bit with alpha"),
    Case("L_12__29x100.heif", 29, 100, False, "12-bit monochrome"),
    Case("LA_8__29x100.heif", 29, 100, True, "monochrome with alpha"),
    Case("photo-p3-720x1440.heic", 720, 1440, False, "a real photo in P3, heif-enc"),
    Case("photo-alpha-540x960.heic", 540, 960, True, "a real PNG with alpha, heif-enc"),
    Case("photo-10bit-1280x800.heic", 1280, 800, False, "a real photo, 10-bit, heif-enc"),
]


def _source(case: Case, data: bytes) -> SourceInfo:
    return SourceInfo(
        format="heif",
        width=case.width,
        height=case.height,
        bytes=len(data),
        has_alpha=case.has_alpha,
        frames=1,
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_variant_of_a_heic_decodes_at_its_size(case: Case) -> None:
    data = heif_sample(case.name)
    rendering = VipsEngine(SETTINGS, LIMITS).render_ladder(data, _source(case, data))
    by_key = {(v.preset.name, v.fmt): v for v in rendering.variants}
    for preset in PRESETS:
        for fmt in formats_for(case.has_alpha):
            variant = by_key.get((preset.name, fmt))
            if variant is None:  # left to the edge (lazy): only above the streaming size
                assert case.width * case.height > SETTINGS.stream_above_pixels
                assert preset.width is None
                continue
            width = min(preset.width or case.width, case.width)
            height = round(case.height * width / case.width)
            out = pyvips.Image.new_from_buffer(variant.body, "", fail_on="error")
            assert str(out.get("vips-loader")).startswith(LOADERS[fmt])
            assert (out.width, out.height) == (variant.width, variant.height)
            assert out.width == width
            assert abs(out.height - height) <= 1
            assert out.format == "uchar"
            assert out.get_typeof("icc-profile-data") == 0
            assert out.get_typeof("exif-data") == 0
            if case.has_alpha and fmt in (Format.PNG, Format.WEBP):
                assert out.hasalpha()
            # Not black, not a flat colour: real pixels came through.
            assert out.extract_band(0).deviate() > 1.0
    assert rendering.placeholder.thumbhash


def test_the_pillow_engine_renders_heic_too() -> None:
    case = CASES[-3]
    data = heif_sample(case.name)
    rendering = PillowEngine(SETTINGS, LIMITS).render_ladder(data, _source(case, data))
    widths = {v.preset.name: v.width for v in rendering.variants}
    assert widths == {"236x": 236, "474x": 474, "736x": 720, "1200x": 720, "originals": 720}


def _diff(a: pyvips.Image, b: pyvips.Image) -> float:
    return float((a.cast("float") - b.cast("float")).abs().max())


def test_irot_and_imir_are_applied_exactly() -> None:
    """arrow.heic is an iPhone photo stored landscape with ``irot`` 3 (270°
    anticlockwise). The same file with the property rewritten in place (same size)
    to angle 0, and to ``imir`` with either axis, decodes to exactly those turns
    and flips of one another (ISO/IEC 23008-12:2022 6.5.12: axis 0 exchanges top
    and bottom, axis 1 left and right)."""
    data = heif_sample("arrow.heic")
    assert data.count(b"irot\x03") == 1
    upright = decode_strict(data, LIMITS)
    stored = decode_strict(data.replace(b"irot\x03", b"irot\x00"), LIMITS)
    top_bottom = decode_strict(data.replace(b"irot\x03", b"imir\x00"), LIMITS)
    left_right = decode_strict(data.replace(b"irot\x03", b"imir\x01"), LIMITS)
    assert (stored.width, stored.height) == (4032, 3024)
    assert (upright.width, upright.height) == (3024, 4032)
    assert _diff(upright, stored.rot90()) == 0
    assert _diff(top_bottom, stored.flipver()) == 0
    assert _diff(left_right, stored.fliphor()) == 0
    assert _diff(left_right, stored) > 100


def test_the_primary_image_is_decoded_not_the_first() -> None:
    data = heif_sample("alpha.heic")
    container = pi_heif.open_heif(data)
    assert len(container) == 3
    assert container.primary_index == 2
    decoded = pyvips.Image.new_from_buffer(decodable(data, LIMITS), "")
    first = pyvips.Image.new_from_memory(container[0].data, 1440, 960, 3, "uchar")
    primary = pyvips.Image.new_from_memory(container[2].data, 1440, 960, 3, "uchar")
    assert _diff(decoded, primary) == 0
    assert _diff(decoded, first) > 50


def test_depth_and_auxiliary_images_are_not_decoded() -> None:
    """pug.heic carries a depth map, aux_YCbCr.heic auxiliary images: the decode is
    the primary image alone, three colour bands at its own size."""
    for name, size in (("pug.heic", (4032, 3024)), ("aux_YCbCr.heic", (4000, 1848))):
        decoded = pyvips.Image.new_from_buffer(decodable(heif_sample(name), LIMITS), "")
        assert (decoded.width, decoded.height) == size
        assert decoded.bands == 3


def test_ten_bit_samples_reach_the_colour_conversion_as_sixteen_bit() -> None:
    decoded = pyvips.Image.new_from_buffer(
        decodable(heif_sample("photo-10bit-1280x800.heic"), LIMITS), ""
    )
    assert decoded.format == "ushort"
    assert decoded.interpretation == "rgb16"
    assert decode_strict(heif_sample("photo-10bit-1280x800.heic"), LIMITS).format == "uchar"


def test_limits_are_checked_from_the_header_before_any_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decodes: list[int] = []
    real = transcoder.heif.decode_to_tiff

    def counting(data: bytes) -> bytes:
        decodes.append(len(data))
        return real(data)

    monkeypatch.setattr(transcoder.heif, "decode_to_tiff", counting)
    data = heif_sample("pug.heic")
    small = Limits(max_pixels=4032 * 3024 - 1)
    case = CASES[0]
    with pytest.raises(ImageTooLarge):
        VipsEngine(SETTINGS, small).render_ladder(data, _source(case, data))
    with pytest.raises(ImageTooLarge):
        VipsEngine(SETTINGS, Limits(max_width=4000)).render_box(data, 236, 236, Format.JPEG, False)
    assert decodes == []
    decode_strict(heif_sample("RGB_8__29x100.heif"), LIMITS)
    assert len(decodes) == 1


@pytest.mark.parametrize("name", ["corrupted.heic", "truncated-p3"])
def test_a_broken_heic_is_undecodable(name: str) -> None:
    if name == "truncated-p3":
        whole = heif_sample("photo-p3-720x1440.heic")
        data = whole[: len(whole) * 2 // 3]
    else:
        data = heif_sample(name)
    with pytest.raises(UndecodableImage):
        VipsEngine(SETTINGS, LIMITS).render_box(data, 236, 236, Format.JPEG, False)


def test_other_formats_pass_through_untouched() -> None:
    jpeg = photo_path("autumn-2560x1600.jpg").read_bytes()
    avif = pyvips.Image.black(64, 64, bands=3).write_to_buffer(".avif")
    assert decodable(jpeg, LIMITS) is jpeg
    assert decodable(avif, LIMITS) is avif


@pytest.mark.parametrize("fmt", [Format.JPEG, Format.WEBP, Format.AVIF])
def test_display_p3_comes_out_as_srgb_with_the_right_colours(fmt: Format, tmp_path: Path) -> None:
    """A chart of known P3 patches (lossless HEIC with a P3 ICC profile) rendered
    through the engine, against littleCMS's own P3 -> sRGB conversion of the raw
    P3 values (relative colorimetric, the profile from a file): CIEDE2000 under 1
    for every patch (measured: at most 0.55), where reading the P3 values as sRGB
    is off by up to 3.8."""
    chart = p3_chart()
    source = SourceInfo(
        format="heif",
        width=chart.p3.width,
        height=chart.p3.height,
        bytes=len(chart.heic),
        has_alpha=False,
        frames=1,
    )
    rendering = VipsEngine(SETTINGS, LIMITS).render_ladder(chart.heic, source)
    (variant,) = [v for v in rendering.variants if v.preset.name == "originals" and v.fmt is fmt]
    assert pyvips.Image.new_from_buffer(variant.body, "").get_typeof("icc-profile-data") == 0
    errors, naive = chart_errors(variant.body, chart, tmp_path)
    assert max(errors) < 1.0, errors
    assert max(naive) > 3.0, naive
    # Every coloured patch: far closer than the unmanaged reading (greys match anyway).
    for error, off in zip(errors[3:], naive[3:], strict=True):
        assert error < off / 2


def test_premultiplied_alpha_is_undone() -> None:
    """heif-enc marks the file premultiplied (libheif's ``prem`` reference): the
    stored colour (100, 50, 25) at alpha 128 is straight (200, 100, 50)."""
    stored = pyvips.Image.black(64, 64).new_from_image([100, 50, 25, 128]).cast("uchar")
    data = heif_enc(
        stored.copy(interpretation="srgb"),
        "-L",
        "-p",
        "chroma=444",
        "--matrix_coefficients=0",
        "--premultiplied-alpha",
    )
    assert pi_heif.open_heif(data).mode == "RGBa"
    decoded = pyvips.Image.new_from_buffer(decodable(data, LIMITS), "")
    means = [decoded.extract_band(b).avg() for b in range(4)]
    assert means == pytest.approx([200, 100, 50, 128], abs=2)


def test_an_nclx_box_naming_p3_primaries_is_converted_as_p3(tmp_path: Path) -> None:
    """A real file with an ``nclx`` colour box (BT.709 primaries, so sRGB), and the
    same file with the primaries rewritten in place to 12 (Display P3): the second
    decodes to exactly littleCMS's P3 -> sRGB conversion of the first."""
    data = heif_sample("unsupported_depth_image.heic")
    assert data.count(b"colrnclx\x00\x01") == 1
    as_srgb = decode_strict(data, LIMITS)
    as_p3 = decode_strict(data.replace(b"colrnclx\x00\x01", b"colrnclx\x00\x0c"), LIMITS)
    profile = tmp_path / "p3.icc"
    profile.write_bytes(p3_profile())
    reference = as_srgb.icc_transform("srgb", input_profile=str(profile), intent="relative")
    assert _diff(as_p3, reference) <= 1
    assert _diff(as_p3, as_srgb) > 20
