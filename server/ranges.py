"""``Range: bytes=...`` for large variants: one range or none.

Multi-range requests and anything malformed are ignored (RFC 9110 allows a
server to ignore ``Range``), so the client gets the whole body with 200.
"""

from __future__ import annotations

import re

_SINGLE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


class Unsatisfiable(ValueError):
    """The range starts past the end of the body: 416."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive, or ``None`` to send the whole body."""
    if not header:
        return None
    match = _SINGLE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0:
            raise Unsatisfiable(header)
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size:
        raise Unsatisfiable(header)
    if end < start:
        return None
    return start, min(end, size - 1)
