"""The Pillow-SIMD engine: the same ladder as the vips engine, on Pillow's codecs.

This Pillow-SIMD build has no AVIF codec and no LittleCMS (check
``PIL.features``), so three steps are handed to libvips: decoding AVIF/HEIF
inputs (which Pillow cannot open), converting pixels with an ICC profile (or
CMYK) to sRGB right after the decode, and encoding AVIF from Pillow's resized
pixels. Everything else (decode, EXIF rotation, resize, JPEG, WebP and PNG
encodes) is Pillow's.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyvips
from PIL import Image, ImageOps, features

from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import Format, Preset, PresetTable, current
from pinhole.domain.manifest import Placeholder
from pinhole.errors import ImageTooLarge, UndecodableImage
from pinhole.ports import RenderedVariant, Rendering
from pinhole.settings import Limits, Transcode
from transcoder.engine import encode_largest_first
from transcoder.vips_engine import VipsEngine, decode_strict, match_alpha, placeholder_of

_PROGRESSIVE_FROM_WIDTH = 474
_LARGE_FROM_WIDTH = 1200
HAS_AVIF = bool(features.check("avif"))


def _to_vips(image: Image.Image) -> pyvips.Image:
    bands = len(image.getbands())
    interpretation = {"L": "b-w", "LA": "b-w", "CMYK": "cmyk"}.get(image.mode, "srgb")
    return pyvips.Image.new_from_memory(
        image.tobytes(), image.width, image.height, bands, "uchar"
    ).copy(interpretation=interpretation)


def _from_vips(image: pyvips.Image) -> Image.Image:
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[image.bands]
    return Image.frombytes(mode, (image.width, image.height), image.write_to_memory())


class PillowEngine:
    def __init__(
        self,
        settings: Transcode,
        limits: Limits | None = None,
        presets: PresetTable | None = None,
    ) -> None:
        self.settings = settings
        self.limits = limits or Limits()
        self.presets = presets or current()
        boxed = [p.name for p in self.presets if not p.width_only or p.quality]
        if boxed:
            # Box and cover presets (crops, gravities, focal points) and per-preset
            # qualities are the vips engine's.
            raise ValueError(
                "transcode.engine = pillow renders width presets at the transcode "
                f"qualities only, not {', '.join(boxed)}"
            )
        self._encoders = ThreadPoolExecutor(
            max_workers=settings.render_threads, thread_name_prefix="pil-encode"
        )
        self._animations: VipsEngine | None = None

    def _decode(self, data: bytes, has_alpha: bool) -> Image.Image:
        """Strict decode (truncation raises), upright, sRGB or grey, no metadata."""
        limits = self.limits
        if data[4:8] == b"ftyp" and not HAS_AVIF:
            # AVIF/HEIF: no Pillow codec here; libvips decodes (and colour-converts) it.
            return _from_vips(match_alpha(decode_strict(data, limits), has_alpha))
        opened = Image.open(io.BytesIO(data))
        frames = getattr(opened, "n_frames", 1)
        width, height = opened.size
        if width > limits.max_width or height > limits.max_height:
            raise ImageTooLarge(f"{width}x{height} exceeds the size limit.")
        if width * height > limits.max_pixels:
            raise ImageTooLarge(f"{width * height} pixels exceed the pixel limit.")
        if frames > limits.max_frames:
            raise ImageTooLarge(f"{frames} frames exceed the frame limit of {limits.max_frames}.")
        opened.seek(0)
        opened.load()
        icc = opened.info.get("icc_profile")
        image: Image.Image = ImageOps.exif_transpose(opened) or opened
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit grey: keep the top 8 bits.
            image = image.convert("I").point(lambda v: v / 256).convert("L")
        elif image.mode not in ("L", "LA", "RGB", "RGBA", "CMYK"):
            image = image.convert("RGBA" if has_alpha else "RGB")
        if icc or image.mode == "CMYK":
            image = self._to_srgb(image, icc)
        if has_alpha and image.mode in ("L", "RGB"):
            image = image.convert(image.mode + "A")
        elif not has_alpha and image.mode in ("LA", "RGBA"):
            background = Image.new(
                image.mode[:-1], image.size, 255 if image.mode == "LA" else (255,) * 3
            )
            background.paste(image, mask=image.getchannel("A"))
            image = background
        image.info = {}
        return image

    def _to_srgb(self, image: Image.Image, icc: bytes | None) -> Image.Image:
        vips = _to_vips(image)
        if icc:
            vips = vips.copy()
            vips.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
            converted = vips.icc_transform("srgb", embedded=True, intent="perceptual")
        else:
            converted = vips.icc_transform("srgb", input_profile="cmyk", intent="perceptual")
        if converted.bands > 2 and image.mode in ("L", "LA"):
            converted = converted.colourspace("b-w")
        return _from_vips(converted.cast("uchar"))

    def render_ladder(
        self, data: bytes, source: SourceInfo, *, focal: tuple[float, float] | None = None
    ) -> Rendering:
        if source.animated:
            # Animations are libvips' (transcoder/animation.py), as the edge renders them.
            if self._animations is None:
                self._animations = VipsEngine(self.settings, self.limits, self.presets)
            return self._animations.render_ladder(data, source, focal=focal)
        try:
            base = self._decode(data, source.has_alpha)
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(str(exc)[:200]) from exc
        except (OSError, SyntaxError, ValueError, EOFError, pyvips.Error) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
            raise UndecodableImage(f"The image cannot be decoded: {first}") from exc
        sizes: list[tuple[Preset, Image.Image]] = []
        for preset in self.presets:
            if preset.lazy:
                continue
            image = base
            if preset.width is not None and preset.width < base.width:
                height = max(1, round(base.height * preset.width / base.width))
                # Pillow premultiplies RGBA for the resize; reducing_gap=2 is what
                # libvips does too (box-shrink, then Lanczos for the last factor of 2).
                image = base.resize(
                    (preset.width, height), Image.Resampling.LANCZOS, reducing_gap=2.0
                )
            sizes.append((preset, image))
        lazy = set(self.settings.lazy_variants)
        jobs = [
            (p, fmt, im)
            for p, im in sizes
            for fmt in p.formats_for(source.has_alpha)
            if f"{p.name}.{fmt.value}" not in lazy
        ]
        variants = encode_largest_first(self._encoders, self._encode, jobs)
        return Rendering(variants, self._placeholder(sizes[0][1] if sizes else base))

    def _encode(self, preset: Preset, fmt: Format, image: Image.Image) -> RenderedVariant:
        started = time.perf_counter()
        s = self.settings
        if fmt is Format.AVIF and not HAS_AVIF:
            body = _to_vips(image).write_to_buffer(
                ".avif", Q=s.avif_quality, effort=s.avif_effort, keep="none"
            )
        else:
            buffer = io.BytesIO()
            options: dict[str, Any]
            if fmt is Format.JPEG:
                options = {
                    "quality": s.jpeg_quality,
                    "optimize": True,
                    "progressive": image.width >= _PROGRESSIVE_FROM_WIDTH,
                }
            elif fmt is Format.WEBP:
                large = image.width >= _LARGE_FROM_WIDTH
                method = s.webp_large_effort if large else s.webp_effort
                options = {"quality": s.webp_quality, "method": method}
            elif fmt is Format.AVIF:
                options = {"quality": s.avif_quality, "speed": max(0, 10 - s.avif_effort)}
            else:
                options = {"compress_level": 6}
            image.save(buffer, format=fmt.value.upper(), **options)
            body = buffer.getvalue()
        return RenderedVariant(
            preset, fmt, image.width, image.height, body, time.perf_counter() - started
        )

    def _placeholder(self, image: Image.Image) -> Placeholder:
        return placeholder_of(_to_vips(image))
