"""The manifest: the durable record of an image, from ``pending`` to ``ready``.

The stored form holds no URLs (the public base URL is a setting that may
change); ``public_view`` adds them with the same key/URL builders the edge
server parses.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from pinhole.domain.ids import ImageId
from pinhole.domain.job import SourceInfo
from pinhole.domain.keys import status_url, variant_url
from pinhole.domain.ladder import Format, Preset, PresetTable, current, fallback_format

MANIFEST_VERSION = 1


class Status(enum.StrEnum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


class Failure(BaseModel):
    code: str
    message: str


class Variant(BaseModel):
    preset: str
    format: Format
    width: int
    height: int
    bytes: int


class Placeholder(BaseModel):
    average_color: str  # "#rrggbb"
    thumbhash: str | None = None  # base64


class Animation(BaseModel):
    """What the transcoder read from an animated original and kept in its
    animated variants. ``loop``: how many times it plays, 0 for ever."""

    frames: int
    duration_ms: int
    loop: int
    delays_ms: list[int] = Field(default_factory=list)


class Focal(BaseModel):
    """The image's focal point, x and y in 0..1 of the upright picture: where
    ``cover`` presets of gravity ``focal`` and ``fill-focal`` renders crop around."""

    x: float = Field(ge=0, le=1)
    y: float = Field(ge=0, le=1)

    @property
    def point(self) -> tuple[float, float]:
        return self.x, self.y

    @classmethod
    def parse(cls, text: str) -> Focal:
        """``x,y`` (each 0..1), as an upload's ``focal`` field or query parameter
        gives it; ``ValueError`` otherwise."""
        x, comma, y = text.strip().partition(",")
        if not comma:
            raise ValueError(text)
        point = float(x), float(y)
        if not all(0 <= v <= 1 for v in point):  # NaN fails this too
            raise ValueError(text)
        return cls(x=point[0], y=point[1])


class Manifest(BaseModel):
    version: int = MANIFEST_VERSION
    id: ImageId
    status: Status
    source: SourceInfo
    created_at: float
    updated_at: float
    variants: list[Variant] = Field(default_factory=list)
    placeholder: Placeholder | None = None
    failure: Failure | None = None
    animation: Animation | None = None
    # The fingerprint of the preset table that rendered the variants
    # (``PresetTable.fingerprint``); None: written before presets were configurable.
    presets: str | None = None
    focal: Focal | None = None

    @property
    def focal_point(self) -> tuple[float, float] | None:
        return self.focal.point if self.focal is not None else None

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        return cls.model_validate_json(data)

    def public_view(
        self,
        edge_base_url: str,
        status_base_url: str,
        *,
        link: Callable[[Preset, ImageId, Format | None], str] | None = None,
        presets: PresetTable | None = None,
    ) -> dict[str, Any]:
        """The JSON clients get: status, dimensions, every variant URL, srcset strings.

        ``link`` makes each variant URL instead of ``variant_url`` (a private
        image's signed, expiring URLs: ``ingest.records.private_link``).
        ``presets``: the table to list (the process's configured one by default)."""
        if link is None:
            link = functools.partial(variant_url, edge_base_url)
        table = presets or current()
        src = self.source
        animated = src.animated
        planned = table.ladder(src.width, src.height, src.has_alpha, animated)
        stored = {(v.preset, v.format): v for v in self.variants}
        variants: list[dict[str, Any]] = []
        for preset, fmt, w, h in planned:
            done = stored.get((preset.name, fmt))
            variants.append(
                {
                    "preset": preset.name,
                    "format": fmt.value,
                    "width": done.width if done else w,
                    "height": done.height if done else h,
                    "bytes": done.bytes if done else None,
                    "url": link(preset, self.id, fmt),
                }
            )
        negotiated = {p.name: link(p, self.id, None) for p in table}
        sized = {(v["preset"], v["format"]): (v["width"], v["height"]) for v in variants}
        real = [(p, f, *sized[(p.name, f.value)]) for p, f, _, _ in planned]
        ladder_group = [row for row in planned if row[0].fit == "inside"]
        return {
            "id": self.id,
            "status": self.status.value,
            "failure": self.failure.model_dump() if self.failure else None,
            "width": src.width,
            "height": src.height,
            "source_format": src.format,
            "has_alpha": src.has_alpha,
            "status_url": status_url(status_base_url, self.id),
            "urls": negotiated,
            "variants": variants,
            "srcset": srcsets(edge_base_url, self.id, ladder_group, link=link),
            "srcset_groups": cover_srcsets(self.id, real, link),
            "presets": self.presets or table.fingerprint,
            "focal": self.focal.model_dump() if self.focal else None,
            "placeholder": self.placeholder.model_dump() if self.placeholder else None,
            "animated": animated,
            "animation": self._animation_view(edge_base_url, table) if animated else None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def _animation_view(self, edge_base_url: str, table: PresetTable) -> dict[str, Any]:
        """Frames, duration and loop (known once rendered), and the still poster
        (first frame) of every preset: JPEG, or PNG with alpha, for ``<img>``
        fallbacks, e-mail and ``prefers-reduced-motion``."""
        poster_fmt = fallback_format(self.source.has_alpha)
        done = self.animation
        alpha = self.source.has_alpha
        with_poster = [p for p in table if poster_fmt in p.formats_for(alpha, True)]
        with_avif = [p for p in table if Format.AVIF in p.formats_for(alpha, True)]
        return {
            "frames": done.frames if done else self.source.frames,
            "duration_ms": done.duration_ms if done else None,
            "loop": done.loop if done else None,
            "poster": {
                p.name: variant_url(edge_base_url, p, self.id, poster_fmt) for p in with_poster
            },
            "poster_avif": {
                p.name: variant_url(edge_base_url, p, self.id, Format.AVIF) for p in with_avif
            },
        }


def srcsets(
    edge_base_url: str,
    image_id: ImageId,
    planned: list[tuple[Preset, Format, int, int]],
    *,
    link: Callable[[Preset, ImageId, Format | None], str] | None = None,
) -> dict[str, str]:
    """One ``srcset`` string per format, plus ``auto`` over the negotiated URLs.

    Presets that collapse to the same width (small sources) appear once.
    """
    if link is None:
        link = functools.partial(variant_url, edge_base_url)
    out: dict[str, str] = {}
    fmts = {fmt for _, fmt, _, _ in planned}
    for fmt in sorted(fmts, key=list(Format).index):
        seen: dict[int, str] = {}
        for preset, f, w, _ in planned:
            if f is fmt and w not in seen:
                seen[w] = link(preset, image_id, fmt)
        out[fmt.value] = ", ".join(f"{url} {w}w" for w, url in seen.items())
    auto: dict[int, str] = {}
    for preset, _, w, _ in planned:
        auto.setdefault(w, link(preset, image_id, None))
    out["auto"] = ", ".join(f"{url} {w}w" for w, url in auto.items())
    return out


def cover_srcsets(
    image_id: ImageId,
    planned: list[tuple[Preset, Format, int, int]],
    link: Callable[[Preset, ImageId, Format | None], str],
) -> dict[str, dict[str, str]]:
    """``srcset`` strings for the ``cover`` presets, one group per box aspect
    (``"1x1"``, ``"16x9"``), each per format plus ``auto``: the boxes of one
    aspect are one picture at several densities, so their descriptors are
    densities relative to the smallest (``1x``, ``2x``); a lone box is ``1x``.
    (The ``inside`` presets are the width ladder: ``srcset``, width descriptors.)"""
    groups: dict[str, list[tuple[Preset, Format, int, int]]] = {}
    for row in planned:
        preset = row[0]
        if preset.fit != "cover" or preset.width is None or preset.height is None:
            continue
        d = math.gcd(preset.width, preset.height)
        groups.setdefault(f"{preset.width // d}x{preset.height // d}", []).append(row)
    out: dict[str, dict[str, str]] = {}
    for aspect, rows in groups.items():
        base = min(w for _, _, w, _ in rows)
        strings: dict[str, str] = {}
        for fmt in sorted({f for _, f, _, _ in rows}, key=list(Format).index):
            seen: dict[str, str] = {}
            for preset, f, w, _ in rows:
                if f is fmt:
                    seen.setdefault(_density(w, base), link(preset, image_id, fmt))
            strings[fmt.value] = ", ".join(f"{url} {d}" for d, url in seen.items())
        auto: dict[str, str] = {}
        for preset, _, w, _ in rows:
            auto.setdefault(_density(w, base), link(preset, image_id, None))
        strings["auto"] = ", ".join(f"{url} {d}" for d, url in auto.items())
        out[aspect] = strings
    return out


def _density(width: int, base: int) -> str:
    return f"{round(width / base, 2):g}x"
