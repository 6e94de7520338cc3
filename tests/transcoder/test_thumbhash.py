"""ThumbHash round trip: a hash decodes back to a picture like the image, downsized."""

from __future__ import annotations

import base64

import pytest
import pyvips

from pinhole.app.vips import configure_vips
from pinhole.domain.job import SourceInfo
from pinhole.settings import Transcode
from tests.support.photos import load_photo, transparent_png
from transcoder.quality import ssim
from transcoder.thumbhash import (
    rgba_to_thumbhash,
    thumbhash_aspect_ratio,
    thumbhash_average_rgba,
    thumbhash_to_rgba,
)
from transcoder.vips_engine import VipsEngine

configure_vips()
ENGINE = VipsEngine(Transcode(avif_effort=0, render_threads=2))


def _rgba(image: pyvips.Image) -> pyvips.Image:
    if image.bands < 3:
        image = image.colourspace("srgb")
    return image if image.hasalpha() else image.bandjoin(255)


def _decoded(thumbhash: str) -> pyvips.Image:
    w, h, rgba = thumbhash_to_rgba(base64.b64decode(thumbhash))
    return pyvips.Image.new_from_memory(rgba, w, h, 4, "uchar").copy(interpretation="srgb")


@pytest.mark.parametrize(
    "name", ["autumn-2560x1600.jpg", "flow-dark-720x1440-portrait.jpg", "pastelhills-3200x2000.jpg"]
)
def test_decoded_thumbhash_looks_like_the_downsized_photo(name: str) -> None:
    photo = load_photo(name)
    source = SourceInfo(
        format="jpeg", width=photo.width, height=photo.height, bytes=1, has_alpha=False
    )
    placeholder = ENGINE.render_ladder(photo.data, source).placeholder
    assert placeholder.thumbhash is not None
    decoded = _decoded(placeholder.thumbhash)
    # The aspect ratio survives (to the hash's coarse precision), at most 32 px.
    assert max(decoded.width, decoded.height) == 32
    assert abs(decoded.width / decoded.height - photo.width / photo.height) < 0.35
    assert abs(thumbhash_aspect_ratio(base64.b64decode(placeholder.thumbhash)) - 1) > 0.1
    # Compared with the photo shrunk to the same size: close in colour and
    # structure. (A hash keeps only the lowest frequencies, and its decoder
    # boosts saturation by 1.25 on purpose, so "close" is loose.)
    reference = pyvips.Image.new_from_buffer(photo.data, "").thumbnail_image(
        decoded.width, height=decoded.height, size="force"
    )
    reference = _rgba(reference).gaussblur(1.5)
    difference = (decoded[0:3].cast("float") - reference[0:3].cast("float")).abs()
    assert difference.avg() < 24, difference.avg()
    assert ssim(decoded[0:3], reference[0:3]) > 0.5
    # The same picture upside down is further away: the comparison has teeth.
    flipped = reference.rot180()
    other = (decoded[0:3].cast("float") - flipped[0:3].cast("float")).abs()
    assert other.avg() > difference.avg(), (other.avg(), difference.avg())
    # The average colour in the manifest agrees with the decoded pixels.
    r, g, b = (int(placeholder.average_color[i : i + 2], 16) for i in (1, 3, 5))
    for band, want in enumerate((r, g, b)):
        assert abs(decoded[band].avg() - want) < 16, (band, decoded[band].avg(), want)


def test_alpha_survives_the_round_trip() -> None:
    photo = transparent_png("autumn-2560x1600.jpg", width=400)
    image = pyvips.Image.new_from_buffer(photo.data, "").thumbnail_image(32, height=32)
    thumbhash = rgba_to_thumbhash(image.width, image.height, bytes(image.write_to_memory()))
    w, h, rgba = thumbhash_to_rgba(thumbhash)
    decoded = pyvips.Image.new_from_memory(rgba, w, h, 4, "uchar")
    # A circle on transparency: corners see-through, centre opaque.
    assert decoded[3].getpoint(0, 0)[0] < 100
    assert decoded[3].getpoint(w // 2, h // 2)[0] > 200
    assert thumbhash_average_rgba(thumbhash)[3] < 1.0


def test_decoder_matches_the_reference_implementation() -> None:
    # Checked byte for byte against the npm ``thumbhash`` 0.1.1 reference
    # (thumbHashToRGBA) on this hash of a 32x20 gradient.
    w, h, rgba = thumbhash_to_rgba(bytes.fromhex("9c070a2c94707787818888878877707108e788"))
    assert (w, h) == (32, 18)
    assert rgba[:32].hex() == "121581ff121480ff12127eff14107cff160e79ff1a0c77ff200b76ff260b76ff"
    assert sum(rgba) == 342074


def test_solid_colour_decodes_to_that_colour() -> None:
    solid = bytes([30, 140, 220, 255] * 16 * 8)
    w, h, rgba = thumbhash_to_rgba(rgba_to_thumbhash(16, 8, solid))
    # The hash keeps the aspect ratio coarsely: 2:1 comes back as 7:4.
    assert (w, h) == (32, 18)
    for i in range(0, len(rgba), 4):
        assert all(abs(rgba[i + c] - (30, 140, 220)[c]) <= 6 for c in range(3)), rgba[i : i + 4]
        assert rgba[i + 3] == 255
