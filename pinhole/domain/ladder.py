"""The ladder: which sizes and formats every image is rendered to."""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class Format(enum.StrEnum):
    AVIF = "avif"
    WEBP = "webp"
    JPEG = "jpeg"
    PNG = "png"
    # Only for animated images: their fallback, animated (``ANIMATED_FORMATS``).
    GIF = "gif"

    @property
    def extension(self) -> str:
        return "jpg" if self is Format.JPEG else self.value

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"

    @classmethod
    def from_extension(cls, ext: str) -> Format:
        if ext == "jpg":
            return cls.JPEG
        if ext == "jpeg":  # only "jpg" is canonical; keep URLs one-per-variant
            raise ValueError(ext)
        return cls(ext)


class FormatClass(enum.StrEnum):
    """What a browser can take: the normalized Accept class keying every cache."""

    AVIF = "avif"
    WEBP = "webp"
    FALLBACK = "fallback"


# How a preset fills its box: ``inside`` fits it (keeps the aspect, never
# upscales); ``cover`` fills the exact box by cropping.
FITS = ("inside", "cover")
# Where a ``cover`` crop sits: the middle, libvips' saliency (``attention``), or
# the image's focal point (``focal``; ``attention`` for an image without one).
GRAVITIES = ("centre", "attention", "focal")
# The format classes a preset is rendered in; ``fallback`` is JPEG, or PNG with alpha.
FORMAT_NAMES = ("avif", "webp", "fallback")
# Names are URL segments: lowercase, digits, ``-`` and ``_``; not the edge's own prefixes.
PRESET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
RESERVED_NAMES = frozenset({"s", "a", "v1", "static", "healthz", "readyz", "metrics"})


def format_name(fmt: Format) -> str:
    """``fmt``'s class name in a preset's ``formats``: avif, webp or fallback
    (JPEG, PNG, and an animated image's GIF)."""
    return fmt.value if fmt in (Format.AVIF, Format.WEBP) else "fallback"


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    # Neither: full size (the "originals" preset, re-encoded and stripped).
    width: int | None
    height: int | None = None
    fit: str = "inside"
    gravity: str = "centre"
    formats: tuple[str, ...] = FORMAT_NAMES
    # Per format class ("avif", "webp", "fallback"): a quality that overrides the
    # transcode setting for this preset's variants.
    quality: tuple[tuple[str, int], ...] = ()
    # Left to the edge, which renders each variant on its first request.
    lazy: bool = False

    @property
    def full_size(self) -> bool:
        return self.width is None and self.height is None

    @property
    def width_only(self) -> bool:
        """Today's kind of preset: a width, fit inside (or full size)."""
        return self.height is None and self.fit == "inside"

    def target_width(self, source_width: int) -> int:
        """Never upscale: a preset wider than the source renders at source width."""
        if self.width is None:
            return source_width
        return min(self.width, source_width)

    def target_size(self, source_width: int, source_height: int) -> tuple[int, int]:
        """The size this preset renders an upright source to. ``inside``: fit the
        box, keep the aspect, never upscale. ``cover``: exactly the box; a source
        smaller than the box gives the largest box-shaped crop it holds instead
        (never upscaled either)."""
        sw, sh = source_width, source_height
        if self.fit == "cover" and self.width is not None and self.height is not None:
            w, h = self.width, self.height
            if sw >= w and sh >= h:
                return w, h
            k = min(sw / w, sh / h)
            return max(1, min(sw, round(w * k))), max(1, min(sh, round(h * k)))
        if self.height is None:
            tw = self.target_width(sw)
            return tw, scaled_height(sw, sh, tw)
        if self.width is None or self.height / sh <= self.width / sw:
            th = min(self.height, sh)
            return max(1, round(sw * th / sh)), th
        tw = min(self.width, sw)
        return tw, scaled_height(sw, sh, tw)

    def formats_for(self, has_alpha: bool, animated: bool = False) -> tuple[Format, ...]:
        """The formats this preset renders for such a source, in ladder order (an
        animated image's GIF is of the ``fallback`` class). Only width presets
        keep an animation: a box or ``cover`` preset of one is a still of its
        first frame, in every still format."""
        animated = animated and self.width_only
        return tuple(f for f in formats_for(has_alpha, animated) if format_name(f) in self.formats)

    def format_for_class(
        self, fmt_class: FormatClass, has_alpha: bool, animated: bool = False
    ) -> Format | None:
        """The best format this preset has for what the browser takes: the class's
        own, else the next one down (AVIF > WebP > fallback). ``None``: none."""
        animated = animated and self.width_only
        order = list(FormatClass)
        for cls in order[order.index(fmt_class) :]:
            fmt = format_for_class(cls, has_alpha, animated)
            if format_name(fmt) in self.formats:
                return fmt
        return None

    def quality_for(self, fmt: Format) -> int | None:
        return dict(self.quality).get(format_name(fmt))

    def spec(self) -> dict[str, Any]:
        """The definition, as the fingerprint and the settings spell it."""
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "fit": self.fit,
            "gravity": self.gravity,
            "formats": list(self.formats),
            "quality": dict(self.quality),
            "lazy": self.lazy,
        }


DEFAULT_PRESETS: tuple[Preset, ...] = (
    Preset("236x", 236),
    Preset("474x", 474),
    Preset("736x", 736),
    Preset("1200x", 1200),
    Preset("originals", None),
)


def cover_region(
    width: int,
    height: int,
    box_width: int,
    box_height: int,
    focal: tuple[float, float] | None = None,
) -> tuple[int, int, int, int]:
    """``(left, top, w, h)``: the largest region of a ``width`` x ``height`` picture
    with the box's aspect, centred on ``focal`` (x, y in 0..1; the middle without
    one) as far as the picture allows, so the focal point is always inside it."""
    if width * box_height >= height * box_width:
        ch = height
        cw = min(width, max(1, round(height * box_width / box_height)))
    else:
        cw = width
        ch = min(height, max(1, round(width * box_height / box_width)))
    return focal_area(width, height, cw, ch, focal)


def focal_area(
    width: int, height: int, area_width: int, area_height: int, focal: tuple[float, float] | None
) -> tuple[int, int, int, int]:
    """``(left, top, w, h)`` of an ``area_width`` x ``area_height`` area of the
    picture centred on ``focal`` (the middle without one), moved only as far as
    needed to stay inside the picture: the focal point is inside it, and as
    central as the picture allows."""
    fx, fy = focal if focal is not None else (0.5, 0.5)
    left = min(max(round(fx * width - area_width / 2), 0), width - area_width)
    top = min(max(round(fy * height - area_height / 2), 0), height - area_height)
    return left, top, area_width, area_height


@dataclass(frozen=True)
class PresetTable:
    """The configured presets, in ladder order: what every role renders, serves,
    lists and purges. Built once from settings (``PresetTable.of``), so every
    role of one configuration agrees; its ``fingerprint`` says whether two do."""

    presets: tuple[Preset, ...]
    by_name: dict[str, Preset] = field(init=False, compare=False)
    fingerprint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.presets})
        canonical = json.dumps([p.spec() for p in self.presets], sort_keys=True)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        object.__setattr__(self, "fingerprint", digest)

    def __iter__(self) -> Iterator[Preset]:
        return iter(self.presets)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def get(self, name: str) -> Preset | None:
        return self.by_name.get(name)

    @property
    def widest(self) -> int:
        """The widest sized preset's box width (the streaming decode's width)."""
        return max((p.width for p in self.presets if p.width is not None), default=0)

    def ladder(
        self, width: int, height: int, has_alpha: bool, animated: bool = False
    ) -> list[tuple[Preset, Format, int, int]]:
        """Every (preset, format, width, height) of this table for such a source."""
        out = []
        for preset in self.presets:
            tw, th = preset.target_size(width, height)
            for fmt in preset.formats_for(has_alpha, animated):
                out.append((preset, fmt, tw, th))
        return out


DEFAULT_TABLE = PresetTable(DEFAULT_PRESETS)
# The table of this process: the defaults until the composition root installs
# the configured one (``pinhole.app.runtime``), once, before any role starts.
_current: list[PresetTable] = [DEFAULT_TABLE]
# Called by ``install`` (caches of parsed preset names: pinhole.domain.keys).
_on_install: list[Callable[[], None]] = []


def current() -> PresetTable:
    return _current[0]


def install(table: PresetTable) -> None:
    """Make ``table`` this process's presets (``PRESETS_BY_NAME``, URL parsing)."""
    _current[0] = table
    PRESETS_BY_NAME.clear()
    PRESETS_BY_NAME.update(table.by_name)
    for forget in _on_install:
        forget()


def on_install(forget: Callable[[], None]) -> None:
    _on_install.append(forget)


# The defaults, by their historic names (tests and bench use them).
PRESETS: tuple[Preset, ...] = DEFAULT_PRESETS
# The current table by name (``install`` keeps it so).
PRESETS_BY_NAME: dict[str, Preset] = {p.name: p for p in PRESETS}


def fallback_format(has_alpha: bool) -> Format:
    return Format.PNG if has_alpha else Format.JPEG


# What an animated image's variants in these formats keep: every frame. Its
# AVIF and JPEG/PNG are the still poster (the first frame): libvips writes no
# AVIF image sequence that browsers play (README, "Animation").
ANIMATED_FORMATS = frozenset({Format.WEBP, Format.GIF})


def formats_for(has_alpha: bool, animated: bool = False) -> tuple[Format, ...]:
    """AVIF, WebP, then the fallback every browser decodes; an animated image
    also has an animated GIF (its AVIF and JPEG/PNG are then posters)."""
    still = (Format.AVIF, Format.WEBP, fallback_format(has_alpha))
    return (*still, Format.GIF) if animated else still


def format_for_class(fmt_class: FormatClass, has_alpha: bool, animated: bool = False) -> Format:
    """The negotiated format. An animated image answers animated WebP to every
    browser that takes WebP (AVIF ones too), animated GIF to the rest."""
    if animated:
        return Format.GIF if fmt_class is FormatClass.FALLBACK else Format.WEBP
    if fmt_class is FormatClass.AVIF:
        return Format.AVIF
    if fmt_class is FormatClass.WEBP:
        return Format.WEBP
    return fallback_format(has_alpha)


def scaled_height(width: int, height: int, target_width: int) -> int:
    """Height that keeps the aspect ratio at ``target_width`` (at least one pixel)."""
    return max(1, round(height * target_width / width))


def ladder(
    width: int,
    height: int,
    has_alpha: bool,
    animated: bool = False,
    presets: PresetTable | None = None,
) -> list[tuple[Preset, Format, int, int]]:
    """Every (preset, format, width, height) that the transcoder renders (for an
    animated image the height is one frame's)."""
    return (presets or current()).ladder(width, height, has_alpha, animated)
