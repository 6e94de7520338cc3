"""The image bytes of an upload: the raw body, or exactly one multipart field ``file``.

A multipart upload may carry text fields beside ``file`` (``owner``, ``alias``,
``metadata`` for its record): they are collected into ``fields``; other fields
(a caption, a CSRF token) are read and dropped.

Every read waits at most ``read_idle_timeout_seconds``, so a client that
trickles a byte now and then (slow-loris) loses its slot long before the
whole-body timeout; the caller bounds the total.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ingest.admission import MULTIPART
from pinhole.errors import BadRequest, PayloadTooLarge, RequestTimeout
from pinhole.settings import Limits

T = TypeVar("T")

CHUNK_BYTES = 256 * 1024
# Fields other than ``file``: at most this many bytes each.
_MAX_OTHER_FIELD_BYTES = 64 * 1024
# The text fields kept for the upload's record (``ingest.records``).
KEPT_FIELDS = frozenset({"owner", "alias", "metadata", "focal"})
_MAX_PARTS = 16


async def _within(awaitable: Awaitable[T], limits: Limits) -> T:
    try:
        async with asyncio.timeout(limits.read_idle_timeout_seconds):
            return await awaitable
    except TimeoutError:
        raise RequestTimeout(
            f"The upload stalled for over {limits.read_idle_timeout_seconds:g} seconds."
        ) from None
    except (HttpProcessingError, ConnectionError):
        raise BadRequest("The upload body was cut short.") from None
    except ValueError:  # aiohttp's multipart reader on a broken part
        raise BadRequest("The multipart body is malformed.") from None


async def _raw(request: web.Request, limits: Limits) -> AsyncIterator[bytes]:
    while chunk := await _within(request.content.read(CHUNK_BYTES), limits):
        yield chunk


async def _read_field(part: BodyPartReader, limits: Limits) -> bytes:
    seen = bytearray()
    while chunk := await _within(part.read_chunk(CHUNK_BYTES), limits):
        seen += chunk
        if len(seen) > _MAX_OTHER_FIELD_BYTES:
            raise PayloadTooLarge(
                f"Multipart fields other than 'file' may hold {_MAX_OTHER_FIELD_BYTES} bytes."
            )
    return bytes(seen)


def _keep(fields: dict[str, str], name: str, raw: bytes) -> None:
    if name in fields:
        raise BadRequest(f"The multipart field {name!r} appears twice.")
    try:
        fields[name] = raw.decode()
    except UnicodeDecodeError:
        raise BadRequest(f"The multipart field {name!r} is not UTF-8 text.") from None


async def _multipart(
    request: web.Request, limits: Limits, fields: dict[str, str]
) -> AsyncIterator[bytes]:
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError):
        raise BadRequest("The multipart body is malformed.") from None
    found = False
    parts = 0
    while (part := await _next_part(reader, limits)) is not None:
        parts += 1
        if parts > _MAX_PARTS:
            raise BadRequest(f"The multipart body has more than {_MAX_PARTS} fields.")
        if part.name != "file":
            raw = await _read_field(part, limits)
            if part.name in KEPT_FIELDS:
                _keep(fields, part.name, raw)
            continue
        if found:
            raise BadRequest("Send one image per request: the field 'file' appears twice.")
        found = True
        while chunk := await _within(part.read_chunk(CHUNK_BYTES), limits):
            yield chunk
    if not found:
        raise BadRequest("The multipart body has no field named 'file'.")


async def _next_part(reader: MultipartReader, limits: Limits) -> BodyPartReader | None:
    try:
        part = await _within(reader.next(), limits)
    except AssertionError:
        raise BadRequest("The multipart body is malformed.") from None
    if part is None:
        return None
    if not isinstance(part, BodyPartReader):
        raise BadRequest("Nested multipart bodies are not accepted.")
    return part


def body_chunks(
    request: web.Request, limits: Limits, fields: dict[str, str] | None = None
) -> AsyncIterator[bytes]:
    """The image's bytes; a multipart body's kept text fields land in ``fields``."""
    if request.content_type == MULTIPART:
        return _multipart(request, limits, {} if fields is None else fields)
    return _raw(request, limits)
