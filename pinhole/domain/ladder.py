"""The ladder: which sizes and formats every image is rendered to."""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    # None: full size (the "originals" preset, re-encoded and stripped).
    width: int | None

    def target_width(self, source_width: int) -> int:
        """Never upscale: a preset wider than the source renders at source width."""
        if self.width is None:
            return source_width
        return min(self.width, source_width)


PRESETS: tuple[Preset, ...] = (
    Preset("236x", 236),
    Preset("474x", 474),
    Preset("736x", 736),
    Preset("1200x", 1200),
    Preset("originals", None),
)
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
    width: int, height: int, has_alpha: bool, animated: bool = False
) -> list[tuple[Preset, Format, int, int]]:
    """Every (preset, format, width, height) that the transcoder renders (for an
    animated image the height is one frame's)."""
    out = []
    for preset in PRESETS:
        tw = preset.target_width(width)
        th = scaled_height(width, height, tw)
        for fmt in formats_for(has_alpha, animated):
            out.append((preset, fmt, tw, th))
    return out
