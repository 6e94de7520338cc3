"""What an upload must pass before a byte of its body is read.

Token, declared length, encoding, request shape, a free upload slot and the
client's rate limits (``pinhole.rate_limits``) are all known from the headers,
so a client that fails one is answered at once:
with ``Expect: 100-continue`` (curl sends it for bodies over 1 MB) before it
sends the body at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiohttp import web
from aiohttp.http import HttpVersion11

from ingest.auth import require_token, token_digest
from ingest.quota import check_declared
from metrics.definitions import UPLOADS
from pinhole.domain.record import validate_owner
from pinhole.errors import (
    ExpectationFailed,
    PayloadTooLarge,
    PinholeError,
    RateLimited,
    UnsupportedMediaType,
)
from pinhole.rate_limits import UPLOADS as UPLOAD_LIMITS
from pinhole.rate_limits import gate_of
from pinhole.settings import Auth, Settings
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


# The RateLimit headers a request earned so far (``limit_upload``), and whether
# its owner was counted: the expect handler and the route's handler both call
# it, and a request is counted once.
RATE_HEADERS = web.RequestKey("pinhole.rate_limit_headers", dict[str, str])
_OWNER_COUNTED = web.RequestKey("pinhole.rate_limit_owner", bool)


def token_subject(request: web.Request, auth: Auth) -> str | None:
    """What a per-token limit counts for a request whose token ``require_token``
    passed: its digest (never the token itself). ``None`` in dev mode, where a
    token is not checked and so names nobody."""
    if auth.allow_anonymous:
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token_digest(token.strip())


def merge_rate_headers(into: dict[str, str], more: dict[str, str]) -> None:
    for name, value in more.items():
        into[name] = f"{into[name]}, {value}" if into.get(name) else value


async def limit_upload(
    request: web.Request,
    settings: Settings,
    *,
    needs_token: bool = True,
    owner: str | None = None,
) -> dict[str, str]:
    """Count an upload against its rate limits (``pinhole.rate_limits``): per
    token, or per client address when it has no token (an upload URL, dev mode),
    and per ``owner`` once it is known. ``RateLimitExceeded`` over a quota; else
    the headers its answer carries. Each subject is counted once per request."""
    gate = gate_of(request)
    if gate is None or not gate.enforces(UPLOAD_LIMITS):
        return {}
    headers: dict[str, str] | None = request.get(RATE_HEADERS)
    if headers is None:
        token = token_subject(request, settings.auth) if needs_token else None
        address = gate.addresses.of(request) if token is None else None
        headers = await gate.check(UPLOAD_LIMITS, token=token, address=address)
        request[RATE_HEADERS] = headers
    if owner is not None and not request.get(_OWNER_COUNTED):
        request[_OWNER_COUNTED] = True
        merge_rate_headers(headers, await gate.check(UPLOAD_LIMITS, owner=owner))
    return headers


def _named_owner(request: web.Request) -> str | None:
    """The owner the path or the query names, if valid (an invalid one is the
    handler's to refuse, with its own code)."""
    raw = request.match_info.get("owner") or request.query.get("owner")
    try:
        return validate_owner(raw) if raw is not None else None
    except PinholeError:
        return None


async def expect_continue(
    request: web.Request,
    settings: Settings,
    slots: UploadSlots,
    *,
    needs_token: bool = True,
    max_bytes: int | None = None,
    owner: str | None = None,
) -> web.StreamResponse | None:
    """``Expect: 100-continue``: the final answer now if the headers earn one.

    aiohttp calls it before the route's handler, and it answers with its own JSON error.
    ``owner``: the upload's record's, when the route does not name it (an
    upload URL's); else the path's or the query's.
    """
    try:
        admit(request, settings, slots, needs_token=needs_token, max_bytes=max_bytes)
        # Before 100 Continue: a client over its rate limit or its storage
        # quota (ingest.quota) never sends the body.
        await limit_upload(request, settings, needs_token=needs_token)
        await check_declared(request, owner or _named_owner(request))
    except PinholeError as exc:
        UPLOADS.labels(exc.code).inc()
        return pinhole_error_response(exc)
    if request.headers.get("Expect", "").strip().lower() != "100-continue":
        return pinhole_error_response(ExpectationFailed())
    if request.version == HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the real response has not started
    return None
