"""The manifest: the durable record of an image, from ``pending`` to ``ready``.

The stored form holds no URLs (the public base URL is a setting that may
change); ``public_view`` adds them with the same key/URL builders the edge
server parses.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from pinhole.domain.ids import ImageId
from pinhole.domain.job import SourceInfo
from pinhole.domain.keys import status_url, variant_url
from pinhole.domain.ladder import PRESETS, Format, Preset, fallback_format, ladder

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
    ) -> dict[str, Any]:
        """The JSON clients get: status, dimensions, every variant URL, srcset strings.

        ``link`` makes each variant URL instead of ``variant_url`` (a private
        image's signed, expiring URLs: ``ingest.records.private_link``)."""
        if link is None:
            link = functools.partial(variant_url, edge_base_url)
        src = self.source
        animated = src.animated
        planned = ladder(src.width, src.height, src.has_alpha, animated)
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
        negotiated = {p.name: link(p, self.id, None) for p in PRESETS}
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
            "srcset": srcsets(edge_base_url, self.id, planned, link=link),
            "placeholder": self.placeholder.model_dump() if self.placeholder else None,
            "animated": animated,
            "animation": self._animation_view(edge_base_url) if animated else None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def _animation_view(self, edge_base_url: str) -> dict[str, Any]:
        """Frames, duration and loop (known once rendered), and the still poster
        (first frame) of every preset: JPEG, or PNG with alpha, for ``<img>``
        fallbacks, e-mail and ``prefers-reduced-motion``."""
        poster_fmt = fallback_format(self.source.has_alpha)
        done = self.animation
        return {
            "frames": done.frames if done else self.source.frames,
            "duration_ms": done.duration_ms if done else None,
            "loop": done.loop if done else None,
            "poster": {p.name: variant_url(edge_base_url, p, self.id, poster_fmt) for p in PRESETS},
            "poster_avif": {
                p.name: variant_url(edge_base_url, p, self.id, Format.AVIF) for p in PRESETS
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
