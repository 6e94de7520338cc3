"""The HMAC of edge URLs: the one place a URL path is signed and verified.

The edge (``server.signing``: which paths are signed, how they parse) and the
record and manifest APIs (signed, expiring ladder URLs of private images,
``ingest.records``) both sign here, with the edge's keys (``Edge.signing_keys``).

``sig`` is the unpadded base64url HMAC-SHA256 of everything after it in the
path, under any configured key: the first key signs, all of them verify.

Two signed forms:

- arbitrary sizes: ``/s/<sig>[/e<expires>]/<w>x<h>/<fit>/ab/cd/ef/<id>[.<ext>]``
  (``server.signing.signed_tail``);
- a ladder variant of a private image:
  ``/s/<sig>/e<expires>/<preset>/ab/cd/ef/<id>[.<ext>]``, the unsigned ladder
  path with the same prefix in front (``ladder_tail``). It always expires: a
  private image's URL is a capability handed out for a while, never for good.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence

from pinhole.domain.ids import ImageId
from pinhole.domain.keys import variant_path
from pinhole.domain.ladder import Format, Preset

SIGNED_PREFIX = "/s/"
# Unix seconds, no leading zeros (one spelling per expiry), up to 12 digits.
EXPIRES_PATTERN = r"e([1-9][0-9]{0,11})"
_EXPIRES = re.compile(EXPIRES_PATTERN)


def signature(key: str, path: str) -> str:
    mac = hmac.new(key.encode(), path.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def sign_path(key: str, tail: str) -> str:
    """The full signed path for ``tail`` (the part after the signature)."""
    return f"{SIGNED_PREFIX}{signature(key, tail)}{tail}"


def verify(keys: Sequence[str], sig: str, tail: str) -> bool:
    ok = False
    for key in keys:
        # No early exit: the time taken does not say which key matched.
        ok |= hmac.compare_digest(signature(key, tail).encode(), sig.encode())
    return ok


def expires_segment(expires: int) -> str:
    """``e<expires>``, checked: a positive Unix time in seconds."""
    segment = f"e{expires}"
    if _EXPIRES.fullmatch(segment) is None:
        raise ValueError("expires must be a positive Unix time in seconds")
    return segment


def parse_expires(text: str) -> int | None:
    """``e<unix-seconds>`` from an expiring URL, or ``None`` if it is not one."""
    match = _EXPIRES.fullmatch(text)
    return None if match is None else int(match.group(1))


def ladder_tail(preset: Preset, image_id: ImageId, fmt: Format | None, expires: int) -> str:
    """The signed part of a ladder variant's expiring URL: ``/e<expires>`` and
    then the unsigned ladder path, byte for byte."""
    return f"/{expires_segment(expires)}{variant_path(preset, image_id, fmt)}"


def signed_ladder_url(
    base_url: str, key: str, preset: Preset, image_id: ImageId, fmt: Format | None, expires: int
) -> str:
    return base_url.rstrip("/") + sign_path(key, ladder_tail(preset, image_id, fmt, expires))


def expiry_for(now: float, life_seconds: int) -> int:
    """The expiry to hand out now for URLs that should live ``life_seconds``:
    rounded up to a tenth of the life, so every answer within that step names
    the same URL (a browser keeps one cached copy, not one per API call), and
    each URL lives between ``life_seconds`` and 1.1 times that."""
    step = max(1, life_seconds // 10)
    return (int(now) + life_seconds + step - 1) // step * step
