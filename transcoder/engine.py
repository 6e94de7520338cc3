"""What the ladder engines share: the encode scheduler. Their Protocol and the
values they return live in ``pinhole.ports`` (``LadderEngine``, ``Rendering``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Protocol, TypeVar

from pinhole.domain.ladder import Format, Preset
from pinhole.ports import RenderedVariant


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
    by the largest AVIF), and return the results in ladder order.

    Jobs with the very same pixels (one image object: presets at least as wide
    as the source share its decode, as ``originals`` does) and format are encoded
    once, since an encode depends only on those two: the other presets get the
    same bytes (and the same ``seconds``), under their own name."""
    first: dict[tuple[int, Format], int] = {}
    for i, (_, fmt, image) in enumerate(jobs):
        first.setdefault((id(image), fmt), i)
    order = sorted(
        first.values(),
        key=lambda i: -ENCODE_COST[jobs[i][1]] * jobs[i][2].width * jobs[i][2].height,
    )
    futures: dict[int, Future[RenderedVariant]] = {i: pool.submit(encode, *jobs[i]) for i in order}
    results = []
    for preset, fmt, image in jobs:
        made = futures[first[(id(image), fmt)]].result()
        results.append(made if made.preset == preset else dataclasses.replace(made, preset=preset))
    return results
