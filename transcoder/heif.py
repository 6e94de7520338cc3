"""HEVC-coded HEIF (iPhone photos), which the libvips in ``pyvips-binary`` cannot
decode: it is built without an HEVC decoder, on patent grounds.

libheif with libde265, from the ``pi-heif`` wheel (decode-only; no x265), decodes
the primary image here, and the pixels go back to libvips as an uncompressed TIFF
with the image's ICC profile. So every path of the engine (header limits,
shrink-on-load, streaming, ``to_srgb8``'s colour conversion) reads it as it reads
any other format, and no other format's bytes change. libheif applies
``irot``/``imir``/``clap`` while decoding, so the TIFF is upright (orientation 1);
depth, auxiliary, thumbnail and non-primary images are never decoded.

``pi-heif`` declares a dependency on stock Pillow, which would shadow
Pillow-SIMD: it is installed with ``--no-deps`` from requirements-nodeps.lock
(Makefile, docker/Dockerfile), and imports ``PIL`` from Pillow-SIMD. See the
README's "HEIC and HEVC" section for the choice and the patent position.
"""

from __future__ import annotations

import functools
from typing import Any

import pyvips

from pinhole.errors import UndecodableImage

try:
    import pi_heif
except ImportError:  # pragma: no cover - the install puts it there; see the module doc
    pi_heif = None

if pi_heif is not None:
    # Only the primary image is decoded; listing the others would parse them for nothing.
    pi_heif.options.DEPTH_IMAGES = False
    pi_heif.options.AUX_IMAGES = False
    pi_heif.options.THUMBNAILS = False

# libvips' heifload names the codec of the primary image in this field.
_CODEC_FIELD = "heif-compression"
# ITU-T H.273 colour primaries of an nclx colour box: 1 BT.709 (sRGB's), 2 unspecified.
_SRGB_PRIMARIES = frozenset({1, 2})
_P3_PRIMARIES = frozenset({11, 12})  # DCI-P3, Display P3 (SMPTE EG 432-1)


def available() -> bool:
    return pi_heif is not None


def needs_own_decoder(header: pyvips.Image) -> bool:
    """True for a HEIF whose primary image is HEVC-coded (HEIC). AVIF, and any other
    codec libvips' libheif has, stay with libvips."""
    if not str(header.get("vips-loader")).startswith("heifload"):
        return False
    return header.get_typeof(_CODEC_FIELD) != 0 and str(header.get(_CODEC_FIELD)) == "hevc"


@functools.cache
def _p3_profile() -> bytes:
    """libvips' built-in Display P3 profile, for an nclx box that names P3 primaries."""
    patch = pyvips.Image.black(1, 1, bands=3).copy(interpretation="srgb")
    profile = patch.icc_transform("p3", input_profile="srgb").get("icc-profile-data")
    return bytes(profile)


def _profile(info: dict[str, Any]) -> bytes | None:
    icc = info.get("icc_profile")
    if icc:
        return bytes(icc)
    nclx = info.get("nclx_profile") or {}
    if nclx.get("color_primaries") in _P3_PRIMARIES:
        return _p3_profile()
    # BT.709 primaries are sRGB's. Wider ones (BT.2020, HDR transfer functions)
    # are not converted: the README's "HEIC and HEVC" says so.
    return None


def _to_vips(image: Any) -> pyvips.Image:
    """The decoded primary image as a pyvips image, sharing the decoded buffer."""
    mode = str(image.mode)
    base, _, depth = mode.partition(";")
    sixteen = bool(depth) or base.startswith("I")
    bands = 1 if base.startswith("I") else len(base)
    width, height = image.size
    pixels = pyvips.Image.new_from_memory(
        image.data, width, height, bands, "ushort" if sixteen else "uchar"
    )
    if bands >= 3:
        interpretation = "rgb16" if sixteen else "srgb"
    else:
        interpretation = "grey16" if sixteen else "b-w"
    pixels = pixels.copy(interpretation=interpretation)
    if base.endswith("a"):  # premultiplied alpha
        pixels = pixels.unpremultiply(max_alpha=65535 if sixteen else 255).cast(
            "ushort" if sixteen else "uchar"
        )
    return pixels


def decode_to_tiff(data: bytes) -> bytes:
    """Decode the primary image (8, 10 or 12 bits, alpha kept, upright) and return it
    as an uncompressed TIFF carrying its ICC profile. Blocking and CPU-bound.

    Call it only after the header limits passed: it decodes every pixel.
    """
    if pi_heif is None:
        raise UndecodableImage("HEIC cannot be decoded: the pi-heif package is not installed.")
    try:
        container = pi_heif.open_heif(data, convert_hdr_to_8bit=False)
        primary = container[container.primary_index]
        pixels = _to_vips(primary)
        profile = _profile(primary.info)
    except (ValueError, RuntimeError, EOFError, OSError, SyntaxError, IndexError) as exc:
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        raise UndecodableImage(f"The image cannot be decoded: {message}") from exc
    if profile is not None:
        pixels = pixels.copy()
        pixels.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile)
    # The decoded buffer backs ``pixels``; the TIFF is written before it goes.
    return bytes(pixels.tiffsave_buffer(compression="none", keep="icc"))
