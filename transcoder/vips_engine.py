"""The libvips engine: auto-rotate, sRGB, strip metadata, never upscale.

The original is decoded once, strictly, upright and in sRGB; every preset is
resized from that one decode and encoded once per format.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pyvips

from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import PRESETS, Format, formats_for
from pinhole.domain.manifest import Placeholder
from pinhole.errors import UndecodableImage
from pinhole.settings import Transcode
from transcoder.engine import RenderedVariant, Rendering
from transcoder.thumbhash import rgba_to_thumbhash

# Large enough that "down" sizing never shrinks: the originals preset.
_NO_LIMIT = 10_000_000
_PLACEHOLDER_SIZE = 32
_PROGRESSIVE_FROM_WIDTH = 474


class VipsEngine:
    def __init__(self, settings: Transcode) -> None:
        self.settings = settings

    def _save_options(self, fmt: Format, width: int) -> tuple[str, dict[str, Any]]:
        s = self.settings
        if fmt is Format.JPEG:
            return ".jpg", {
                "Q": s.jpeg_quality,
                "optimize_coding": True,
                "interlace": width >= _PROGRESSIVE_FROM_WIDTH,
                "keep": "none",
            }
        if fmt is Format.PNG:
            return ".png", {"compression": 6, "keep": "none"}
        if fmt is Format.WEBP:
            return ".webp", {"Q": s.webp_quality, "effort": s.webp_effort, "keep": "none"}
        return ".avif", {"Q": s.avif_quality, "effort": s.avif_effort, "keep": "none"}

    def _decode(self, data: bytes) -> pyvips.Image:
        """Decode once, strictly (truncation is an error), upright and 8-bit sRGB/grey."""
        image = pyvips.Image.new_from_buffer(data, "", fail_on="error")
        image = image.autorot()
        if image.get_typeof("icc-profile-data") != 0:
            # Profiles are stripped on save, so pixels must already be sRGB.
            image = image.icc_transform("srgb", embedded=True, intent="perceptual")
        elif image.interpretation == "cmyk":
            image = image.icc_transform("srgb", input_profile="cmyk", intent="perceptual")
        if image.interpretation in ("grey16", "b-w") and image.bands <= 2:
            image = image.colourspace("b-w")
        elif image.interpretation != "srgb":
            image = image.colourspace("srgb")
        if image.format != "uchar":
            image = image.cast("uchar")
        return image.copy_memory()

    def render_ladder(self, data: bytes, source: SourceInfo) -> Rendering:
        try:
            base = self._decode(data)
            variants: list[RenderedVariant] = []
            for preset in PRESETS:
                image = base
                if preset.width is not None and preset.width < base.width:
                    # Derived from the one decode; thumbnail_image premultiplies alpha.
                    image = base.thumbnail_image(preset.width, height=_NO_LIMIT, size="down")
                    image = image.copy_memory()
                for fmt in formats_for(source.has_alpha):
                    started = time.perf_counter()
                    suffix, options = self._save_options(fmt, image.width)
                    body = image.write_to_buffer(suffix, **options)
                    variants.append(
                        RenderedVariant(
                            preset,
                            fmt,
                            image.width,
                            image.height,
                            body,
                            time.perf_counter() - started,
                        )
                    )
            placeholder = self._placeholder(base)
        except pyvips.Error as exc:
            raise UndecodableImage(f"The image cannot be decoded: {_first_line(exc)}") from exc
        return Rendering(variants, placeholder)

    def _placeholder(self, image: pyvips.Image) -> Placeholder:
        small = image.thumbnail_image(_PLACEHOLDER_SIZE, height=_PLACEHOLDER_SIZE)
        if small.bands < 3:
            small = small.colourspace("srgb")
        if not small.hasalpha():
            small = small.bandjoin(255)
        rgba = bytes(small.extract_band(0, n=4).write_to_memory())
        thumbhash = rgba_to_thumbhash(small.width, small.height, rgba)
        rgb = [round(small.extract_band(band).avg()) for band in range(3)]
        return Placeholder(
            average_color="#{:02x}{:02x}{:02x}".format(*rgb),
            thumbhash=base64.b64encode(thumbhash).decode(),
        )


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
