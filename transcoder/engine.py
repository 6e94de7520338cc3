"""What a render engine produces, and the Protocol engines implement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import Format, Preset
from pinhole.domain.manifest import Placeholder


@dataclass(frozen=True, slots=True)
class RenderedVariant:
    preset: Preset
    fmt: Format
    width: int
    height: int
    body: bytes
    seconds: float


@dataclass(frozen=True, slots=True)
class Rendering:
    variants: list[RenderedVariant]
    placeholder: Placeholder


class RenderEngine(Protocol):
    """Blocking: engines run on the worker's bounded thread pool."""

    def render_ladder(self, data: bytes, source: SourceInfo) -> Rendering:
        """Every (preset, format) of the ladder. Raises ``UndecodableImage`` or
        ``ImageTooLarge`` for inputs that can never succeed."""
        ...
