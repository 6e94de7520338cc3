"""Signed URLs for arbitrary sizes: ``/s/<sig>/<w>x<h>/<fit>/ab/cd/ef/<id>[.<ext>]``.

``sig`` is the unpadded base64url HMAC-SHA256 of everything after it (the path
from ``/<w>x<h>`` on), under any configured key: the first key signs, all of
them verify, so keys rotate by adding the new one first and dropping the old one
once no live URL uses it. Signing the path, not parameters, keeps one URL per
rendition for every cache in front of us.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pinhole.domain.ids import ImageId
from pinhole.domain.keys import fan_out
from pinhole.domain.ladder import Format

# How the box is filled: fit inside it, or cover it and crop (centre or salient part).
FITS: dict[str, str | None] = {"fit": None, "fill-centre": "centre", "fill-attention": "attention"}
SIGNED_PREFIX = "/s/"
_SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")


def signature(key: str, path: str) -> str:
    mac = hmac.new(key.encode(), path.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def signed_tail(
    width: int, height: int, fit: str, image_id: ImageId, fmt: Format | None = None
) -> str:
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}")
    ext = "" if fmt is None else f".{fmt.extension}"
    return f"/{width}x{height}/{fit}/{fan_out(image_id)}/{image_id}{ext}"


def rendition_key(width: int, height: int, fit: str, image_id: ImageId, fmt: Format) -> str:
    """Hot-cache key of a signed rendition (kept in L1/Redis only, never in storage)."""
    return "signed" + signed_tail(width, height, fit, image_id, fmt)


def sign_path(key: str, tail: str) -> str:
    """The full signed path for ``tail`` (from ``signed_tail``)."""
    return f"{SIGNED_PREFIX}{signature(key, tail)}{tail}"


def verify(keys: Sequence[str], sig: str, tail: str) -> bool:
    ok = False
    for key in keys:
        # No early exit: the time taken does not say which key matched.
        ok |= hmac.compare_digest(signature(key, tail).encode(), sig.encode())
    return ok


@dataclass(frozen=True, slots=True)
class Box:
    width: int
    height: int
    fit: str

    @property
    def crop(self) -> str | None:
        return FITS[self.fit]


def parse_size(text: str) -> tuple[int, int] | None:
    match = _SIZE.fullmatch(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))
