"""What an upload must pass before a byte of its body is read.

Token, declared length, encoding, request shape and a free upload slot are
all known from the headers, so a client that fails one is answered at once:
with ``Expect: 100-continue`` (curl sends it for bodies over 1 MB) before it
sends the body at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiohttp import web
from aiohttp.http import HttpVersion11

from ingest.auth import require_token
from metrics.definitions import UPLOADS
from pinhole.errors import (
    ExpectationFailed,
    PayloadTooLarge,
    PinholeError,
    RateLimited,
    UnsupportedMediaType,
)
from pinhole.settings import Settings
from pinhole.web import pinhole_error_response

MULTIPART = "multipart/form-data"
# Upload by URL: a JSON body naming the image's URL (``ingest.fetch``).
URL_JSON = "application/json"
_RAW_TYPES = ("image/", "application/octet-stream")
_IDENTITY = ("", "identity")


class UploadSlots:
    """Uploads in progress in this process, refused beyond ``limit`` rather than queued.

    Waiting would hold a connection, a socket buffer and a spool file for
    every queued client, which is what a flood wants; a 429 with Retry-After
    sends the client away and tells it when to come back. Only the event loop
    touches the counter, so it needs no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    @property
    def full(self) -> bool:
        return self.in_use >= self.limit

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        if self.full:
            raise RateLimited(f"{self.limit} uploads are in progress; retry shortly.")
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


def admit(
    request: web.Request,
    settings: Settings,
    slots: UploadSlots,
    *,
    needs_token: bool = True,
    max_bytes: int | None = None,
) -> None:
    """Raise the first ``PinholeError`` the headers alone already earn. An upload
    URL (``ingest.upload_urls``) is its own credential (``needs_token=False``)
    and may set a lower ``max_bytes``."""
    if needs_token:
        require_token(request, settings.auth)
    limit = settings.limits.max_upload_bytes if max_bytes is None else max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The upload exceeds the limit of {limit} bytes.")
    if request.headers.get("Content-Encoding", "").strip().lower() not in _IDENTITY:
        # Images are compressed already; a compressed body is only a way to
        # make us inflate more than was sent.
        raise UnsupportedMediaType("Send the image bytes without a Content-Encoding.")
    content_type = request.content_type
    by_url = content_type == URL_JSON and needs_token  # ingest.fetch
    if content_type != MULTIPART and not content_type.startswith(_RAW_TYPES) and not by_url:
        raise UnsupportedMediaType(
            "Send the image as the raw body with Content-Type image/*, "
            "or as multipart/form-data with a field named 'file'"
            + (', or its URL as JSON {"url": ...}.' if needs_token else ".")
        )
    if slots.full:
        raise RateLimited(f"{slots.limit} uploads are in progress; retry shortly.")


async def expect_continue(
    request: web.Request,
    settings: Settings,
    slots: UploadSlots,
    *,
    needs_token: bool = True,
    max_bytes: int | None = None,
) -> web.StreamResponse | None:
    """``Expect: 100-continue``: the final answer now if the headers earn one.

    aiohttp calls it before the route's handler, and it answers with its own JSON error.
    """
    try:
        admit(request, settings, slots, needs_token=needs_token, max_bytes=max_bytes)
    except PinholeError as exc:
        UPLOADS.labels(exc.code).inc()
        return pinhole_error_response(exc)
    if request.headers.get("Expect", "").strip().lower() != "100-continue":
        return pinhole_error_response(ExpectationFailed())
    if request.version == HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the real response has not started
    return None
