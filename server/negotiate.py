"""Reduce an ``Accept`` header to one format class: AVIF > WebP > fallback.

Every cache tier keys on the class, never on the raw header, so the thousands
of distinct Accept strings browsers send collapse to three entries.
"""

from __future__ import annotations

import functools

from pinhole.domain.ladder import FormatClass


def _accepted_types(accept: str) -> set[str]:
    accepted: set[str] = set()
    for item in accept.split(",")[:64]:  # bounded work on junk headers
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            accepted.add(media.lower())
    return accepted


def accept_class(accept: str | None) -> FormatClass:
    # Browsers send a handful of distinct Accept strings: parse each once.
    # Long ones (junk, or a cache-filling attack) are parsed every time.
    if accept is not None and len(accept) <= _CACHED_ACCEPT_LENGTH:
        return _cached_accept_class(accept)
    return _accept_class(accept)


_CACHED_ACCEPT_LENGTH = 512


@functools.lru_cache(maxsize=1024)
def _cached_accept_class(accept: str) -> FormatClass:
    return _accept_class(accept)


def _accept_class(accept: str | None) -> FormatClass:
    if not accept:
        return FormatClass.FALLBACK
    types = _accepted_types(accept)
    if "image/avif" in types:
        return FormatClass.AVIF
    if "image/webp" in types:
        return FormatClass.WEBP
    return FormatClass.FALLBACK
