"""The libvips engine: auto-rotate, sRGB, strip metadata, never upscale.

The original is decoded once, strictly, upright and in sRGB; every preset is
resized from that one decode and encoded once per format. The encodes (the
expensive part: AVIF, then WebP) run on a pool of ``render_threads``, most
expensive first, because each libvips encoder is mostly single-threaded.

The ``originals`` preset needs the full-size pixels, so up to
``stream_above_pixels`` one full decode feeds every preset. Above it, memory
wins: the sized presets come from a shrink-on-load decode to the widest preset,
the originals fallback streams from a sequential decode into its encoder, and
the originals WebP/AVIF are left to the edge (lazy). Measurements behind these
choices: bench/transcode and the README's Benchmarks section.
"""

from __future__ import annotations

import base64
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyvips

from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import (
    ANIMATED_FORMATS,
    Format,
    Preset,
    PresetTable,
    cover_region,
    current,
    focal_area,
)
from pinhole.domain.manifest import Placeholder
from pinhole.errors import ImageTooLarge, UndecodableImage
from pinhole.ports import RenderedVariant, Rendering
from pinhole.settings import Limits, Transcode
from transcoder import heif
from transcoder.engine import encode_largest_first
from transcoder.thumbhash import rgba_to_thumbhash

if TYPE_CHECKING:
    from transcoder.animation import AnimatedRenderer

# Large enough that "down" sizing never shrinks: the originals preset.
_NO_LIMIT = 10_000_000
_PLACEHOLDER_SIZE = 32
_PROGRESSIVE_FROM_WIDTH = 474
# Outputs this wide and up use the cheaper WebP effort (measured: bench/transcode).
_LARGE_FROM_WIDTH = 1200


def check_limits(image: pyvips.Image, limits: Limits) -> None:
    """Refuse, from the header alone, what ingest should already have refused."""
    pages = image.get("n-pages") if image.get_typeof("n-pages") != 0 else 1
    if image.width > limits.max_width or image.height > limits.max_height:
        raise ImageTooLarge(f"{image.width}x{image.height} exceeds the size limit.")
    if image.width * image.height > limits.max_pixels:
        raise ImageTooLarge(f"{image.width * image.height} pixels exceed the pixel limit.")
    if pages > limits.max_frames:
        raise ImageTooLarge(f"{pages} frames exceed the frame limit of {limits.max_frames}.")
    if pages > 1 and pages * image.width * image.height > limits.max_animation_pixels:
        raise ImageTooLarge(
            f"{pages * image.width * image.height} pixels over {pages} frames exceed "
            f"the limit of {limits.max_animation_pixels}."
        )


def match_alpha(image: pyvips.Image, has_alpha: bool) -> pyvips.Image:
    """The planned formats follow ``has_alpha``: an opaque plan gets no alpha band
    (JPEG would read a fourth band as CMYK), an alpha plan keeps or gets one."""
    if image.hasalpha() and not has_alpha:
        return image.flatten(background=255)
    if has_alpha and not image.hasalpha():
        return image.bandjoin(255)
    return image


def decodable(data: bytes, limits: Limits) -> bytes:
    """The bytes libvips decodes: HEVC-coded HEIF (no HEVC decoder in this libvips)
    becomes, once its header passed the limits, an uncompressed TIFF of its primary
    image decoded by libheif (transcoder/heif.py); every other format is returned
    as it is, untouched. Cheap for those: no ISO-BMFF ``ftyp``, no header read."""
    if data[4:8] != b"ftyp":
        return data
    header = pyvips.Image.new_from_buffer(data, "", fail_on="error")
    if not heif.needs_own_decoder(header):
        return data
    check_limits(header, limits)
    return heif.decode_to_tiff(data)


def decode_strict(data: bytes, limits: Limits) -> pyvips.Image:
    """Decode once, strictly (truncation is an error), upright and 8-bit sRGB/grey."""
    data = decodable(data, limits)
    image = pyvips.Image.new_from_buffer(data, "", fail_on="error")
    check_limits(image, limits)
    return to_srgb8(image.autorot()).copy_memory()


def to_srgb8(image: pyvips.Image) -> pyvips.Image:
    """Pointwise, so it streams: ICC/CMYK to sRGB, 8 bits, grey stays grey."""
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
    return image


def _orientation(image: pyvips.Image) -> int:
    value = image.get("orientation") if image.get_typeof("orientation") != 0 else 1
    return int(value) if 1 <= int(value) <= 8 else 1


def shrink_on_load(header: pyvips.Image, shrink: float) -> dict[str, Any]:
    """Loader options that decode at most ``shrink`` times smaller: JPEG by DCT
    scaling, by the largest of 2/4/8 that is not above ``shrink`` (what sharp,
    so ipx, and thumbor's PIL draft mode do; libvips' own thumbnail leaves a
    further factor of two, which costs a decode of up to 4x the pixels for a
    mean SSIM 0.003 higher, bench/render); WebP by libwebp's scaled decode, by
    exactly ``shrink``. Every other format decodes at full size: libheif has no
    scaled decode, and the embedded HEIF thumbnail libvips would use instead
    never decodes the main picture, so a truncated one would not fail."""
    loader = str(header.get("vips-loader"))
    if loader.startswith("jpegload"):
        factor = 8 if shrink >= 8 else 4 if shrink >= 4 else 2 if shrink >= 2 else 1
        return {"shrink": factor} if factor > 1 else {}
    if loader.startswith("webpload") and shrink > 1:
        return {"scale": 1 / shrink}
    return {}


def decode_shrunk(data: bytes, upright_width: int) -> pyvips.Image:
    """A strict, streaming decode straight to ``upright_width`` (never larger than
    the source), shrinking on load where the format can (JPEG by 2/4/8, WebP by
    any scale), so the full-size pixels never sit in memory. The ladder's sized
    presets of a large source come from this (and ``render_variant`` with them)."""
    header = pyvips.Image.new_from_buffer(data, "", fail_on="error")
    swapped = _orientation(header) >= 5
    source_width = header.height if swapped else header.width
    loader = str(header.get("vips-loader"))
    options: dict[str, Any] = {}
    if loader.startswith("jpegload"):
        shrink = 1
        while shrink < 8 and source_width // (shrink * 2) >= upright_width:
            shrink *= 2
        options["shrink"] = shrink
    elif loader.startswith("webpload") and source_width > upright_width:
        options["scale"] = upright_width / source_width * 1.01
    image = pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on="error", **options)
    image = to_srgb8(image)
    # no_rotate: thumbnail_image would turn the box (and then the picture) itself.
    if swapped:
        image = image.thumbnail_image(_NO_LIMIT, height=upright_width, size="down", no_rotate=True)
    else:
        image = image.thumbnail_image(upright_width, height=_NO_LIMIT, size="down", no_rotate=True)
    return image.copy_memory().autorot()


def resized_size(
    source_width: int, source_height: int, width: int, height: int, crop: str | None
) -> tuple[int, int]:
    """The size ``thumbnail_image(width, height=height, size="down", crop=crop)``
    resizes an upright ``source_width`` x ``source_height`` picture to, before any
    crop: fit inside the box, or (``crop``) cover it; never larger than the
    source. Computed by libvips itself on a lazy blank image (no pixel is made),
    so a shrunk decode lands on exactly the size a full one would."""
    blank = pyvips.Image.black(source_width, source_height)
    if crop is None:
        fitted = blank.thumbnail_image(width, height=height, size="down")
        return fitted.width, fitted.height
    shrink = min(source_width / width, source_height / height)
    if shrink <= 1:
        return source_width, source_height
    covered = blank.resize(1 / shrink, vscale=1 / shrink)
    return covered.width, covered.height


def decode_box(
    data: bytes,
    width: int,
    height: int,
    has_alpha: bool,
    limits: Limits,
    *,
    crop: str | None = None,
    focal: tuple[float, float] | None = None,
) -> pyvips.Image:
    """Upright 8-bit sRGB/grey pixels that fit (or, with ``crop``, fill) the box,
    decoded at the smallest scale that still gives it (``shrink_on_load``), so
    memory follows the box, not the source. As strict as ``decode_strict``: the
    resize reads every row of the source before anything is encoded, so a
    truncated or corrupt one fails (``pyvips.Error``) instead of rendering grey."""
    header = pyvips.Image.new_from_buffer(data, "", fail_on="error")
    check_limits(header, limits)
    swapped = _orientation(header) >= 5
    upright = (header.height, header.width) if swapped else (header.width, header.height)
    if crop == "focal" and focal is None:
        crop = "attention"  # an image without a focal point: its salient part
    target = resized_size(*upright, width, height, crop)
    options = shrink_on_load(header, min(upright[0] / target[0], upright[1] / target[1]))
    image = pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on="error", **options)
    stored = (target[1], target[0]) if swapped else target
    if (image.width, image.height) != stored:
        # Exactly the size a full decode would give (a shrunk load rounds its own
        # way); thumbnail_image premultiplies alpha, and, given no profile, leaves
        # the colour alone.
        image = image.thumbnail_image(stored[0], height=stored[1], size="force", no_rotate=True)
    # Colour after the resize, as libvips' own thumbnail does: the ICC transform
    # then runs over the box's pixels, not the decode's (up to 4x as many).
    image = match_alpha(to_srgb8(image), has_alpha)
    # The one full pass over the data, into memory the size of the box: a
    # sequential source cannot be rotated or smart-cropped as it streams.
    image = image.copy_memory().autorot()
    if crop is not None and (image.width > width or image.height > height):
        box = min(width, image.width), min(height, image.height)
        if crop == "focal":
            image = image.extract_area(*_focal_area(image, *box, focal))
        else:
            image = image.smartcrop(*box, interesting=crop)
    return image


def _focal_area(
    image: pyvips.Image, width: int, height: int, focal: tuple[float, float] | None
) -> tuple[int, int, int, int]:
    """The ``width`` x ``height`` area of ``image`` around ``focal``, as central
    as the picture allows (``focal_area``)."""
    return focal_area(image.width, image.height, width, height, focal)


class VipsEngine:
    def __init__(
        self,
        settings: Transcode,
        limits: Limits | None = None,
        presets: PresetTable | None = None,
    ) -> None:
        self.settings = settings
        self.limits = limits or Limits()
        # The configured ladder (pinhole.app.runtime passes settings.preset_table).
        self.presets = presets or current()
        # Shared by every job of this engine, so encodes never exceed the cores.
        self._encoders = ThreadPoolExecutor(
            max_workers=settings.render_threads or os.cpu_count() or 1,
            thread_name_prefix="encode",
        )

    def _save_options(
        self, fmt: Format, width: int, preset: Preset | None = None
    ) -> tuple[str, dict[str, Any]]:
        s = self.settings
        quality = preset.quality_for(fmt) if preset is not None else None
        if fmt is Format.JPEG:
            return ".jpg", {
                "Q": quality or s.jpeg_quality,
                "optimize_coding": True,
                "interlace": width >= _PROGRESSIVE_FROM_WIDTH,
                "keep": "none",
            }
        if fmt is Format.PNG:
            return ".png", {"compression": 6, "keep": "none"}
        if fmt is Format.WEBP:
            effort = s.webp_large_effort if width >= _LARGE_FROM_WIDTH else s.webp_effort
            return ".webp", {"Q": quality or s.webp_quality, "effort": effort, "keep": "none"}
        return ".avif", {"Q": quality or s.avif_quality, "effort": s.avif_effort, "keep": "none"}

    def _decode(self, data: bytes) -> pyvips.Image:
        return decode_strict(data, self.limits)

    def _eager(self, preset: Preset, has_alpha: bool, *, streaming: bool) -> list[Format]:
        if preset.lazy:
            return []
        lazy = set(self.settings.lazy_variants)
        if streaming and preset.full_size:
            # WebP and AVIF encoders need the whole picture (and an ARGB/YUV copy).
            lazy |= {f"{preset.name}.{Format.WEBP.value}", f"{preset.name}.{Format.AVIF.value}"}
        return [f for f in preset.formats_for(has_alpha) if f"{preset.name}.{f.value}" not in lazy]

    def _streaming_width(self, header: pyvips.Image) -> int:
        """The upright width of the shrink-on-load decode a large source's sized
        presets come from: enough for every one of them (the widest width, and
        the width a height or a cover box needs at the source's aspect)."""
        swapped = _orientation(header) >= 5
        uw, uh = (header.height, header.width) if swapped else (header.width, header.height)
        needed = [self.presets.widest]
        for p in self.presets:
            if p.height is not None:
                needed.append(min(uw, -(-p.height * uw // uh)))
        return max(needed)

    def render_ladder(
        self, data: bytes, source: SourceInfo, *, focal: tuple[float, float] | None = None
    ) -> Rendering:
        try:
            data = decodable(data, self.limits)
            header = pyvips.Image.new_from_buffer(data, "", fail_on="error")
            check_limits(header, self.limits)
            if source.animated and _animated(header):
                return _animator(self).render_ladder(data, source, header)
            if header.width * header.height > self.settings.stream_above_pixels:
                return self._render_streaming(data, source, header, focal)
            base = match_alpha(self._decode(data), source.has_alpha)
            sizes = self._sizes(base, focal)
            jobs = [
                (preset, fmt, image)
                for preset, image in sizes
                for fmt in self._eager(preset, source.has_alpha, streaming=False)
            ]
            variants = encode_largest_first(self._encoders, self._encode, jobs)
            placeholder = self._placeholder(sizes[0][1] if sizes else base)
        except pyvips.Error as exc:
            raise UndecodableImage(f"The image cannot be decoded: {_first_line(exc)}") from exc
        return Rendering(variants, placeholder)

    def _render_streaming(
        self,
        data: bytes,
        source: SourceInfo,
        header: pyvips.Image,
        focal: tuple[float, float] | None,
    ) -> Rendering:
        """Large sources in bounded memory: the sized presets come from one
        shrink-on-load decode to the widest preset, and the originals fallback is
        encoded while a second, sequential decode streams through it."""
        has_alpha = source.has_alpha
        base = match_alpha(decode_shrunk(data, self._streaming_width(header)), has_alpha)
        jobs: list[tuple[Preset, Format, pyvips.Image]] = []
        for preset, image in self._sizes(base, focal):
            if not preset.full_size:
                jobs += [(preset, f, image) for f in self._eager(preset, has_alpha, streaming=True)]
        futures = [self._encoders.submit(self._encode, *job) for job in jobs]
        sized = [f.result() for f in futures]
        # Only then the full size, so the two peaks never add up.
        full = [
            self._encode_streaming(data, originals, f, has_alpha)
            for originals in self.presets
            if originals.full_size
            for f in self._eager(originals, has_alpha, streaming=True)
        ]
        by_key = {(v.preset, v.fmt): v for v in sized + full}
        variants = [
            by_key[(p, f)]
            for p in self.presets
            for f in p.formats_for(has_alpha)
            if (p, f) in by_key
        ]
        return Rendering(variants, self._placeholder(base))

    def _encode_streaming(
        self, data: bytes, preset: Preset, fmt: Format, has_alpha: bool
    ) -> RenderedVariant:
        started = time.perf_counter()
        probe = pyvips.Image.new_from_buffer(data, "", fail_on="error")
        # Rotation reads out of order, so only upright sources stream; libvips
        # keeps a rotated one in a temporary file above its disc threshold.
        access = "sequential" if _orientation(probe) == 1 else "random"
        image = pyvips.Image.new_from_buffer(data, "", access=access, fail_on="error")
        image = match_alpha(to_srgb8(image).autorot(), has_alpha)
        suffix, options = self._save_options(fmt, image.width, preset)
        if fmt is Format.JPEG:
            # Progressive and optimized Huffman coding both buffer every DCT
            # coefficient of the picture (~370 MB at 60 MP); baseline streams
            # in ~60 MB, at about 1.6x the bytes. Measured: bench/transcode.
            options.update(interlace=False, optimize_coding=False)
        body = image.write_to_buffer(suffix, **options)
        return RenderedVariant(
            preset, fmt, image.width, image.height, body, time.perf_counter() - started
        )

    def _sizes(
        self, base: pyvips.Image, focal: tuple[float, float] | None = None
    ) -> list[tuple[Preset, pyvips.Image]]:
        """Every eager preset's pixels, each resized from the one decode (so a
        single ``render_variant`` gives the same bytes); presets wider than the
        source share its pixels (never upscaled)."""
        return [
            (preset, _preset_pixels(base, preset, focal))
            for preset in self.presets
            if not preset.lazy
        ]

    def _encode(self, preset: Preset, fmt: Format, image: pyvips.Image) -> RenderedVariant:
        started = time.perf_counter()
        suffix, options = self._save_options(fmt, image.width, preset)
        body = image.write_to_buffer(suffix, **options)
        return RenderedVariant(
            preset, fmt, image.width, image.height, body, time.perf_counter() - started
        )

    def render_variant(
        self,
        data: bytes,
        preset: Preset,
        fmt: Format,
        has_alpha: bool,
        *,
        focal: tuple[float, float] | None = None,
    ) -> RenderedVariant:
        """One (preset, format) of the ladder, byte-for-byte what ``render_ladder``
        makes for it, by the ladder's own path: the edge renders a missing variant
        with this. So a source up to ``stream_above_pixels`` is decoded at full
        size (the ladder resizes every preset from that decode); a larger one
        gives its sized presets from the ladder's shrink-on-load decode to the
        widest preset, and its originals from the streaming decode."""
        if fmt in ANIMATED_FORMATS and preset.width_only and _animated_source(data):
            try:
                return _animator(self).render_variant(data, preset, fmt)
            except pyvips.Error as exc:
                raise UndecodableImage(f"The image cannot be decoded: {_first_line(exc)}") from exc
        started = time.perf_counter()
        try:
            data = decodable(data, self.limits)
            header = pyvips.Image.new_from_buffer(data, "", fail_on="error")
            check_limits(header, self.limits)
            if header.width * header.height <= self.settings.stream_above_pixels:
                base = self._decode(data)
            elif preset.full_size:
                return self._encode_streaming(data, preset, fmt, has_alpha)
            else:
                base = decode_shrunk(data, self._streaming_width(header))
            image = _preset_pixels(match_alpha(base, has_alpha), preset, focal)
            suffix, options = self._save_options(fmt, image.width, preset)
            body = image.write_to_buffer(suffix, **options)
        except pyvips.Error as exc:
            raise UndecodableImage(f"The image cannot be decoded: {_first_line(exc)}") from exc
        return RenderedVariant(
            preset, fmt, image.width, image.height, body, time.perf_counter() - started
        )

    def render_box(
        self,
        data: bytes,
        width: int,
        height: int,
        fmt: Format,
        has_alpha: bool,
        *,
        crop: str | None = None,
        preset: Preset | None = None,
        focal: tuple[float, float] | None = None,
    ) -> RenderedVariant:
        """Fit within ``width`` x ``height`` (``crop=None``), or fill exactly that box
        cropping with ``crop`` ("attention", "centre", or "focal": around ``focal``,
        attention without one); never upscales either way. Decoded at the
        smallest scale that gives the box (``decode_box``)."""
        started = time.perf_counter()
        try:
            data = decodable(data, self.limits)
            image = decode_box(data, width, height, has_alpha, self.limits, crop=crop, focal=focal)
            suffix, options = self._save_options(fmt, image.width)
            if fmt is Format.JPEG:
                # Baseline, as sharp (ipx) and thumbor send: a progressive encode
                # costs about 6 ms more per render of 200-1600 px for 3.5% fewer
                # bytes at the same pixels (bench/render). The ladder stays progressive.
                options["interlace"] = False
            body = image.write_to_buffer(suffix, **options)
        except pyvips.Error as exc:
            raise UndecodableImage(f"The image cannot be decoded: {_first_line(exc)}") from exc
        return RenderedVariant(
            preset or Preset(f"{width}x{height}", width),
            fmt,
            image.width,
            image.height,
            body,
            time.perf_counter() - started,
        )

    def _placeholder(self, image: pyvips.Image) -> Placeholder:
        return placeholder_of(image)


def placeholder_of(image: pyvips.Image) -> Placeholder:
    """ThumbHash and average colour, from at most 32x32 pixels of ``image``."""
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


def _preset_pixels(
    base: pyvips.Image, preset: Preset, focal: tuple[float, float] | None = None
) -> pyvips.Image:
    """``preset``'s pixels resized from ``base``; never upscaled. A ``cover``
    preset crops ``base`` to the box's aspect first (at its gravity: the middle,
    the salient part, or around ``focal``), then resizes that to the box."""
    if preset.width_only:
        if preset.width is None or preset.width >= base.width:
            return base
        # thumbnail_image premultiplies alpha.
        return base.thumbnail_image(preset.width, height=_NO_LIMIT, size="down").copy_memory()
    tw, th = preset.target_size(base.width, base.height)
    image = base
    if preset.fit == "cover":
        gravity = preset.gravity
        if gravity == "focal" and focal is None:
            gravity = "attention"  # no focal point: the salient part
        left, top, cw, ch = cover_region(base.width, base.height, tw, th, focal)
        if gravity == "attention":
            image = base.smartcrop(cw, ch, interesting="attention")
        elif gravity == "centre":
            image = base.extract_area((base.width - cw) // 2, (base.height - ch) // 2, cw, ch)
        else:
            image = base.extract_area(left, top, cw, ch)
    if (image.width, image.height) == (tw, th):
        return image.copy_memory()
    return image.thumbnail_image(tw, height=th, size="force").copy_memory()


def _animated(header: pyvips.Image) -> bool:
    from transcoder.animation import is_animated

    return is_animated(header)


def _animated_source(data: bytes) -> bool:
    try:
        return _animated(pyvips.Image.new_from_buffer(data, "", fail_on="error"))
    except pyvips.Error:
        return False  # the still path reports it


def _animator(engine: VipsEngine) -> AnimatedRenderer:
    """The animated path (transcoder/animation.py), which builds on this module."""
    from transcoder.animation import AnimatedRenderer

    return AnimatedRenderer(engine)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
