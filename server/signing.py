"""Signed URLs for arbitrary sizes: ``/s/<sig>[/e<expires>]/<w>x<h>/<fit>/ab/cd/ef/<id>[.<ext>]``.

``sig`` is the unpadded base64url HMAC-SHA256 of everything after it (the path
from ``/e<expires>`` or ``/<w>x<h>`` on; computed in ``pinhole.domain.signing``,
the one place URLs are signed, which also signs the expiring ladder URLs of
private images), under any configured key: the first key
signs, all of them verify, so keys rotate by adding the new one first and
dropping the old one once no live URL uses it. Signing the path, not parameters,
keeps one URL per rendition for every cache in front of us.

An expiring URL carries its expiry (Unix seconds) as an optional path segment
inside the signed part, so altering it breaks the signature, and a URL without
one is byte-for-byte what it was before expiries existed. A path segment rather
than a query parameter: the path is what is signed already and what every cache
keys on, while query strings get dropped on the way (cdn_config/: CloudFront
forwards none, nginx and Fastly key on the path alone), so a signed ``?exp=``
would fail or need every config changed, and would need a canonical order and
encoding of its own to sign.

The expiry is not in ``rendition_key``: the bytes are the same, so every expiry
of one rendition shares one hot-cache entry (one render).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pinhole.domain.ids import ImageId
from pinhole.domain.keys import fan_out
from pinhole.domain.ladder import Format
from pinhole.domain.signing import SIGNED_PREFIX as SIGNED_PREFIX
from pinhole.domain.signing import expires_segment
from pinhole.domain.signing import parse_expires as parse_expires
from pinhole.domain.signing import sign_path as sign_path
from pinhole.domain.signing import signature as signature
from pinhole.domain.signing import verify as verify

# How the box is filled: fit inside it, or cover it and crop (centre, salient
# part, or around the image's focal point: the salient part without one).
FITS: dict[str, str | None] = {
    "fit": None,
    "fill-centre": "centre",
    "fill-attention": "attention",
    "fill-focal": "focal",
}
# One spelling per size (no leading zeros); a 0 side follows the aspect (not both).
_SIZE = re.compile(r"(0|[1-9][0-9]{0,4})x(0|[1-9][0-9]{0,4})")


def signed_tail(
    width: int,
    height: int,
    fit: str,
    image_id: ImageId,
    fmt: Format | None = None,
    expires: int | None = None,
) -> str:
    """The signed part of the path; with ``expires`` (Unix seconds) it starts
    ``/e<expires>``, without it it is exactly what it always was."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}")
    ext = "" if fmt is None else f".{fmt.extension}"
    tail = f"/{width}x{height}/{fit}/{fan_out(image_id)}/{image_id}{ext}"
    if expires is None:
        return tail
    return f"/{expires_segment(expires)}{tail}"


def rendition_key(width: int, height: int, fit: str, image_id: ImageId, fmt: Format) -> str:
    """Hot-cache key of a signed rendition (kept in L1/Redis only, never in storage).

    The same for every expiry of the rendition and for its non-expiring URL: an
    expired URL must be refused before this key is looked up (``serve_signed``)."""
    return "signed" + signed_tail(width, height, fit, image_id, fmt)


@dataclass(frozen=True, slots=True)
class Box:
    width: int
    height: int
    fit: str

    @property
    def crop(self) -> str | None:
        return FITS[self.fit]


def parse_size(text: str) -> tuple[int, int] | None:
    """``<w>x<h>`` in pixels; ``<w>x0`` or ``0x<h>``: that side only, the other
    follows the aspect (as in thumbor and imgproxy). ``None`` if malformed."""
    match = _SIZE.fullmatch(text)
    if match is None:
        return None
    width, height = int(match.group(1)), int(match.group(2))
    return None if width == height == 0 else (width, height)


def remaining_life(expires: int, now: float, skew_seconds: float) -> float | None:
    """Seconds the URL has left (zero or less within the skew allowance past its
    expiry), or ``None`` if it has expired beyond that allowance."""
    remaining = expires - now
    return None if remaining < -skew_seconds else remaining
