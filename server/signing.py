"""Signed URLs for arbitrary sizes: ``/s/<sig>[/e<expires>]/<w>x<h>/<fit>/ab/cd/ef/<id>[.<ext>]``.

``sig`` is the unpadded base64url HMAC-SHA256 of everything after it (the path
from ``/e<expires>`` or ``/<w>x<h>`` on), under any configured key: the first key
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
# One spelling per size (no leading zeros); a 0 side follows the aspect (not both).
_SIZE = re.compile(r"(0|[1-9][0-9]{0,4})x(0|[1-9][0-9]{0,4})")
# Unix seconds, no leading zeros (one spelling per expiry), up to 12 digits.
_EXPIRES = re.compile(r"e([1-9][0-9]{0,11})")


def signature(key: str, path: str) -> str:
    mac = hmac.new(key.encode(), path.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


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
    if _EXPIRES.fullmatch(f"e{expires}") is None:
        raise ValueError("expires must be a positive Unix time in seconds")
    return f"/e{expires}{tail}"


def rendition_key(width: int, height: int, fit: str, image_id: ImageId, fmt: Format) -> str:
    """Hot-cache key of a signed rendition (kept in L1/Redis only, never in storage).

    The same for every expiry of the rendition and for its non-expiring URL: an
    expired URL must be refused before this key is looked up (``serve_signed``)."""
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
    """``<w>x<h>`` in pixels; ``<w>x0`` or ``0x<h>``: that side only, the other
    follows the aspect (as in thumbor and imgproxy). ``None`` if malformed."""
    match = _SIZE.fullmatch(text)
    if match is None:
        return None
    width, height = int(match.group(1)), int(match.group(2))
    return None if width == height == 0 else (width, height)


def parse_expires(text: str) -> int | None:
    """``e<unix-seconds>`` from an expiring URL, or ``None`` if it is not one."""
    match = _EXPIRES.fullmatch(text)
    return None if match is None else int(match.group(1))


def remaining_life(expires: int, now: float, skew_seconds: float) -> float | None:
    """Seconds the URL has left (zero or less within the skew allowance past its
    expiry), or ``None`` if it has expired beyond that allowance."""
    remaining = expires - now
    return None if remaining < -skew_seconds else remaining
