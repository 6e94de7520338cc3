"""Header-only inspection with libvips: dimensions, frames, alpha — no pixel decode."""

from __future__ import annotations

from pathlib import Path

import pyvips

from ingest.sniff import LOADERS, InputFormat
from ingest.structure import check_dimensions
from pinhole.domain.job import SourceInfo
from pinhole.errors import ImageTooLarge, UndecodableImage, UnsupportedMediaType
from pinhole.settings import Limits

# EXIF orientations 5-8 swap width and height once the image is upright.
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
# Rendered with every frame (transcoder/animation.py), so bounded over all of them.
_ANIMATED = frozenset({InputFormat.GIF, InputFormat.WEBP})


def _int_field(image: pyvips.Image, name: str, default: int) -> int:
    if image.get_typeof(name) == 0:
        return default
    return int(image.get(name))


def probe_header(path: Path, fmt: InputFormat, size: int, limits: Limits) -> SourceInfo:
    """Blocking: call it from a worker thread."""
    try:
        image = pyvips.Image.new_from_file(str(path), access="sequential")
        loader = str(image.get("vips-loader"))
    except pyvips.Error as exc:
        raise UndecodableImage("The image header cannot be read.") from exc
    if loader not in LOADERS[fmt]:
        # Magic bytes said one thing, the decoder another: a disguised file.
        raise UnsupportedMediaType(f"The bytes look like {fmt.value} but do not decode as it.")
    width, height = image.width, image.height
    frames = _int_field(image, "n-pages", 1)
    if _int_field(image, "orientation", 1) in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    check_dimensions(width, height, limits)
    if frames > limits.max_frames:
        raise ImageTooLarge(f"The image has {frames} frames; the limit is {limits.max_frames}.")
    if fmt in _ANIMATED and frames > 1 and frames * width * height > limits.max_animation_pixels:
        raise ImageTooLarge(
            f"The animation has {frames * width * height} pixels over its {frames} frames; "
            f"the limit is {limits.max_animation_pixels}."
        )
    return SourceInfo(
        format=fmt.value,
        width=width,
        height=height,
        bytes=size,
        has_alpha=bool(image.hasalpha()),
        frames=frames,
    )
