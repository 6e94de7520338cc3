"""The vips engine on small generated images: orientation, colour, depth, alpha, limits."""

from __future__ import annotations

import base64

import pytest
import pyvips

from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import Format
from pinhole.errors import UndecodableImage
from pinhole.settings import Transcode
from transcoder.thumbhash import thumbhash_average_rgba
from transcoder.vips_engine import VipsEngine

ENGINE = VipsEngine(Transcode(avif_effort=0, render_threads=1))
METADATA = ("exif-data", "xmp-data", "iptc-data", "icc-profile-data")


def _source(image: pyvips.Image, fmt: str = "jpeg") -> SourceInfo:
    return SourceInfo(
        format=fmt,
        width=image.width,
        height=image.height,
        bytes=1,
        has_alpha=bool(image.hasalpha()),
    )


def _gradient(width: int = 900, height: int = 600) -> pyvips.Image:
    xy = pyvips.Image.xyz(width, height)
    red = (xy[0] * 255 / width).cast("uchar")
    green = (xy[1] * 255 / height).cast("uchar")
    return red.bandjoin([green, (red + green) / 2]).cast("uchar").copy(interpretation="srgb")


def _decoded(body: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(body, "")


def test_whole_ladder_with_exact_widths_and_no_metadata() -> None:
    image = _gradient()
    rendering = ENGINE.render_ladder(image.write_to_buffer(".jpg"), _source(image))
    got = {(v.preset.name, v.fmt): v for v in rendering.variants}
    assert len(got) == 15
    for (preset, fmt), v in got.items():
        out = _decoded(v.body)
        expected = {"236x": 236, "474x": 474, "736x": 736}.get(preset, 900)  # never upscaled
        assert out.width == v.width == expected, (preset, fmt)
        assert abs(out.height - 600 * expected / 900) <= 1
        for field in METADATA:
            assert out.get_typeof(field) == 0, (preset, fmt, field)
    assert _decoded(got[("474x", Format.JPEG)].body).get("interlaced") == 1
    assert _decoded(got[("236x", Format.JPEG)].body).get_typeof("interlaced") == 0 or (
        _decoded(got[("236x", Format.JPEG)].body).get("interlaced") == 0
    )


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_every_exif_orientation_comes_out_upright(orientation: int) -> None:
    upright = _gradient(300, 200)
    # Store pixels so that applying `orientation` gives back `upright`.
    stored = {
        1: upright,
        2: upright.fliphor(),
        3: upright.rot180(),
        4: upright.flipver(),
        5: upright.rot90().fliphor(),
        6: upright.rot270(),
        7: upright.rot270().fliphor(),
        8: upright.rot90(),
    }[orientation].copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    data = stored.write_to_buffer(".jpg", Q=95, keep="exif")
    source = SourceInfo(format="jpeg", width=300, height=200, bytes=len(data), has_alpha=False)
    rendering = ENGINE.render_ladder(data, source)
    original = next(
        v for v in rendering.variants if v.preset.name == "originals" and v.fmt is Format.JPEG
    )
    out = _decoded(original.body)
    assert (out.width, out.height) == (300, 200)
    # Top-left is dark (red and green both low), bottom-right bright.
    assert out.getpoint(5, 5)[0] < 40
    assert out.getpoint(5, 5)[1] < 40
    assert out.getpoint(294, 194)[0] > 200
    assert out.getpoint(294, 194)[1] > 200
    assert out.get_typeof("exif-data") == 0


def test_cmyk_and_16_bit_and_grey_inputs_become_8_bit_srgb_or_grey() -> None:
    rgb = _gradient(300, 200)
    cmyk = rgb.icc_export(output_profile="cmyk") if hasattr(rgb, "icc_export") else None
    inputs: list[tuple[pyvips.Image, str]] = [
        (rgb.colourspace("rgb16"), ".png"),
        (rgb.colourspace("b-w"), ".png"),
        (rgb.colourspace("b-w").bandjoin(200), ".png"),
    ]
    if cmyk is not None:
        inputs.append((cmyk, ".jpg"))
    for image, suffix in inputs:
        data = image.write_to_buffer(suffix)
        loaded = pyvips.Image.new_from_buffer(data, "")
        rendering = ENGINE.render_ladder(data, _source(loaded))
        for v in rendering.variants:
            out = _decoded(v.body)
            assert out.format == "uchar", (image.interpretation, v.fmt)
            assert out.interpretation in ("srgb", "b-w"), (image.interpretation, v.fmt)


def test_alpha_is_kept_and_fallback_is_png() -> None:
    image = _gradient(300, 200).bandjoin(pyvips.Image.xyz(300, 200)[0].cast("uchar"))
    data = image.write_to_buffer(".png")
    rendering = ENGINE.render_ladder(data, _source(image, "png"))
    assert {v.fmt for v in rendering.variants} == {Format.AVIF, Format.WEBP, Format.PNG}
    for v in rendering.variants:
        assert _decoded(v.body).hasalpha(), v.fmt
    assert rendering.placeholder.thumbhash is not None


def test_undecodable_bytes_raise_a_permanent_error() -> None:
    image = _gradient()
    data = image.write_to_buffer(".jpg")
    with pytest.raises(UndecodableImage):
        ENGINE.render_ladder(data[: len(data) // 2], _source(image))
    with pytest.raises(UndecodableImage):
        ENGINE.render_ladder(b"not an image", _source(image))


def test_placeholder_average_colour_matches_the_thumbhash() -> None:
    solid = pyvips.Image.black(200, 100).new_from_image([200, 40, 90]).copy(interpretation="srgb")
    rendering = ENGINE.render_ladder(solid.write_to_buffer(".png"), _source(solid, "png"))
    placeholder = rendering.placeholder
    assert placeholder.average_color == "#c8285a"
    assert placeholder.thumbhash is not None
    r, g, b, a = thumbhash_average_rgba(base64.b64decode(placeholder.thumbhash))
    assert abs(r * 255 - 200) < 12
    assert abs(g * 255 - 40) < 12
    assert abs(b * 255 - 90) < 12
    assert a == 1.0
