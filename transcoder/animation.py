"""Animated GIF and WebP through the ladder: every frame, its delay and the loop kept.

libvips loads an animation (``n=-1``) as one tall "toilet-roll" image, the
frames stacked with ``page-height``; ``thumbnail`` resizes each page alike,
so every frame of a preset has the same size and the delays and loop count
ride along as metadata into ``webpsave`` and ``gifsave`` (cgif).

Memory stays bounded for a long animation: a preset whose frames fit in
``_IN_MEMORY_BYTES`` is decoded once for both its encoders; a bigger one is
decoded sequentially into each encoder, which take a frame at a time, so the
whole roll never sits in memory (README, "Animation": the measured peak RSS).

The animated formats are WebP and GIF (``ANIMATED_FORMATS``). The AVIF and
JPEG/PNG variants of an animated image are its still poster, the first
frame, rendered by the still path: libvips' ``heifsave`` writes frames as
separate items of a ``mif1`` file, not an AVIF sequence browsers play.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import pyvips

from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import ANIMATED_FORMATS, Format, Preset, format_name, formats_for
from pinhole.domain.manifest import Animation
from pinhole.ports import RenderedVariant, Rendering
from transcoder.vips_engine import VipsEngine, check_limits, match_alpha, to_srgb8

_NO_LIMIT = 10_000_000
# A preset's whole roll (width x height x frames x 4 bands) up to this is decoded
# once for both its encoders; above it, each encoder streams its own decode.
_IN_MEMORY_BYTES = 64 * 1024 * 1024


def is_animated(header: pyvips.Image) -> bool:
    """A header (``n=1``) of a GIF or WebP with more than one frame."""
    loader = str(header.get("vips-loader")) if header.get_typeof("vips-loader") else ""
    return _pages(header) > 1 and loader.startswith(("gifload", "webpload"))


def _pages(image: pyvips.Image) -> int:
    return int(image.get("n-pages")) if image.get_typeof("n-pages") != 0 else 1


def animation_of(header: pyvips.Image) -> Animation:
    pages = _pages(header)
    delays = list(header.get("delay")) if header.get_typeof("delay") != 0 else []
    delays = [int(d) for d in delays[:pages]] + [0] * max(0, pages - len(delays))
    loop = int(header.get("loop")) if header.get_typeof("loop") != 0 else 0
    return Animation(frames=pages, duration_ms=sum(delays), loop=loop, delays_ms=delays)


def _roll(data: bytes, width: int | None) -> pyvips.Image:
    """Every frame, 8-bit sRGB with alpha, each resized to ``width`` (never up)."""
    # A source over the bytes, not a buffer: pyvips copies a buffer argument into
    # a blob, one copy of the whole file per decode.
    source = pyvips.Source.new_from_memory(data)
    if width is None:
        image = pyvips.Image.new_from_source(source, "", n=-1, access="sequential", fail_on="error")
    else:
        # thumbnail resizes page by page and sets page-height to the new frame height.
        image = pyvips.Image.thumbnail_source(
            source, width, height=_NO_LIMIT, size="down", option_string="n=-1,fail_on=error"
        )
    image = to_srgb8(image)
    if image.bands == 1:
        image = image.colourspace("srgb")
    if not image.hasalpha():
        image = image.bandjoin(255)
    return image


def _frame_height(image: pyvips.Image) -> int:
    return int(image.get("page-height")) if image.get_typeof("page-height") else image.height


class AnimatedRenderer:
    """The animated half of ``VipsEngine``: its pool and encoder settings."""

    def __init__(self, engine: VipsEngine) -> None:
        self.engine = engine

    def _save(self, image: pyvips.Image, fmt: Format, width: int) -> bytes:
        s = self.engine.settings
        options: dict[str, Any]
        if fmt is Format.WEBP:
            effort = s.webp_large_effort if width >= 1200 else s.webp_effort
            options = {"Q": s.webp_quality, "effort": effort, "keep": "none"}
            return bytes(image.write_to_buffer(".webp", **options))
        options = {"effort": s.gif_effort, "keep": "none"}
        return bytes(image.write_to_buffer(".gif", **options))

    def _encode(
        self, data: bytes, preset: Preset, fmts: list[Format], *, hold: bool
    ) -> list[RenderedVariant]:
        """``hold``: decode once into memory for every format; else each format
        streams from its own sequential decode."""
        out: list[RenderedVariant] = []
        roll = _roll(data, preset.width).copy_memory() if hold else None
        for fmt in fmts:
            started = time.perf_counter()
            image = roll if roll is not None else _roll(data, preset.width)
            body = self._save(image, fmt, image.width)
            out.append(
                RenderedVariant(
                    preset,
                    fmt,
                    image.width,
                    _frame_height(image),
                    body,
                    time.perf_counter() - started,
                )
            )
        return out

    def _preset_jobs(
        self, data: bytes, preset: Preset, fmts: list[Format], source: SourceInfo
    ) -> list[Future[list[RenderedVariant]]]:
        pool = self.engine._encoders
        width = preset.target_width(source.width)
        height = max(1, round(source.height * width / source.width))
        if width * height * 4 * source.frames <= _IN_MEMORY_BYTES:
            return [pool.submit(self._encode, data, preset, fmts, hold=True)]
        # Too big to hold: each encoder streams from its own sequential decode.
        return [pool.submit(self._encode, data, preset, [fmt], hold=False) for fmt in fmts]

    def render_ladder(self, data: bytes, source: SourceInfo, header: pyvips.Image) -> Rendering:
        """Posters (AVIF and JPEG/PNG of the first frame) by the still path, then
        animated WebP and GIF of every preset."""
        engine = self.engine
        check_limits(header, engine.limits)
        animation = animation_of(header)
        has_alpha = source.has_alpha
        lazy = set(engine.settings.lazy_variants)

        def eager(preset: Preset, fmts: tuple[Format, ...]) -> list[Format]:
            return [f for f in fmts if f"{preset.name}.{f.value}" not in lazy]

        still_formats = tuple(f for f in formats_for(has_alpha) if f not in ANIMATED_FORMATS)
        animated_formats = tuple(f for f in formats_for(has_alpha, True) if f in ANIMATED_FORMATS)
        # The poster: the still ladder of the first frame (libvips loads page 0).
        base = match_alpha(engine._decode(data), has_alpha)
        sizes = engine._sizes(base)
        # A box or cover preset of an animation is a still in every still format.
        still_jobs = [
            engine._encoders.submit(engine._encode, preset, fmt, image)
            for preset, image in sizes
            for fmt in eager(
                preset,
                still_formats if preset.width_only else preset.formats_for(has_alpha),
            )
            if fmt in preset.formats_for(has_alpha, True)
        ]
        placeholder = engine._placeholder(sizes[0][1] if sizes else base)
        del base, sizes
        # Largest presets first: the pool's makespan is bounded by the biggest roll.
        animated_jobs: list[Future[list[RenderedVariant]]] = []
        animating = [p for p in engine.presets if p.width_only and not p.lazy]
        for preset in sorted(animating, key=lambda p: -(p.width or _NO_LIMIT)):
            fmts = [f for f in eager(preset, animated_formats) if format_name(f) in preset.formats]
            if fmts:
                animated_jobs += self._preset_jobs(data, preset, fmts, source)
        done = [f.result() for f in still_jobs]
        for job in animated_jobs:
            done += job.result()
        by_key = {(v.preset, v.fmt): v for v in done}
        variants = [
            by_key[(p, f)]
            for p in engine.presets
            for f in p.formats_for(has_alpha, True)
            if (p, f) in by_key
        ]
        return Rendering(variants, placeholder, animation)

    def render_variant(self, data: bytes, preset: Preset, fmt: Format) -> RenderedVariant:
        """One animated (preset, format): what ``render_ladder`` makes for it."""
        header = pyvips.Image.new_from_buffer(data, "", fail_on="error")
        check_limits(header, self.engine.limits)
        return self._encode(data, preset, [fmt], hold=False)[0]
