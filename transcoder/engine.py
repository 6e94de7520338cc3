"""What a render engine produces, and the Protocol engines implement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol, TypeVar

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


class Sized(Protocol):
    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...


ImageT = TypeVar("ImageT", bound=Sized)

# Rough relative cost of one encode per output pixel, to start the slowest first.
ENCODE_COST = {Format.AVIF: 8.0, Format.WEBP: 4.0, Format.PNG: 2.0, Format.JPEG: 1.0}


def encode_largest_first(
    pool: Executor,
    encode: Callable[[Preset, Format, ImageT], RenderedVariant],
    jobs: Sequence[tuple[Preset, Format, ImageT]],
) -> list[RenderedVariant]:
    """Run every encode on ``pool``, slowest first (the pool's makespan is bounded
    by the largest AVIF), and return the results in ladder order."""
    order = sorted(
        range(len(jobs)),
        key=lambda i: -ENCODE_COST[jobs[i][1]] * jobs[i][2].width * jobs[i][2].height,
    )
    futures = {i: pool.submit(encode, *jobs[i]) for i in order}
    return [futures[i].result() for i in range(len(jobs))]
