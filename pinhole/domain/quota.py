"""Storage quotas per owner: what an owner may hold, and what it holds now.

An owner's usage is the sum over its records: each record counts one image and
the bytes of its image's original, as uploaded. Content ids are shared (the same
bytes are stored once, whoever uploads them), but usage is not: every owner's
record of shared bytes counts them in full. So an owner's usage never depends on
what anyone else uploads or deletes, and never reveals whether someone else holds
the same bytes (README "Storage quotas").
"""

from __future__ import annotations

from dataclasses import dataclass

from pinhole.errors import QuotaExceeded


@dataclass(frozen=True, slots=True)
class Quota:
    """At most ``max_images`` records and ``max_bytes`` bytes; ``None``: no limit."""

    max_bytes: int | None = None
    max_images: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.max_bytes is None and self.max_images is None

    def refusal(self, usage: Usage, *, images: int, size: int) -> str | None:
        """Why adding ``images`` records of ``size`` bytes in all to ``usage``
        would go over: "images" or "bytes" (images first), ``None`` if it fits."""
        if self.max_images is not None and usage.images + images > self.max_images:
            return "images"
        if self.max_bytes is not None and usage.bytes + size > self.max_bytes:
            return "bytes"
        return None


@dataclass(frozen=True, slots=True)
class Usage:
    """An owner's records and the bytes of their originals."""

    images: int = 0
    bytes: int = 0


def exceeded(owner: str, kind: str, quota: Quota, usage: Usage) -> QuotaExceeded:
    """The refusal of an upload that ``quota.refusal`` says goes over by ``kind``."""
    if kind == "images":
        return QuotaExceeded(
            f"Owner {owner!r} holds {usage.images} of its {quota.max_images} images.", kind=kind
        )
    return QuotaExceeded(
        f"Owner {owner!r} uses {usage.bytes} of its {quota.max_bytes} bytes; "
        "this upload does not fit.",
        kind=kind,
    )
