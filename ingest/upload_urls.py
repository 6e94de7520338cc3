"""One-time upload URLs: a browser uploads with one and no other credential.

``POST /v1/upload-urls`` (bearer token) signs a token that carries every claim
of the upload (owner, expiry, size limit, formats, metadata, the upload's id),
so validating a URL needs no lookup: ``POST /v1/uploads/{token}`` checks the
HMAC-SHA256 signature (a changed byte: ``upload-url-invalid``), then the expiry
(``upload-url-expired``), and takes the body through the upload path with the
claims as its limits and its record.

One use across every ingest process: once the body has passed every file check,
the upload *claims* the URL with a conditional put of one object in the shared
blob store (``upload_claim_key``); of two uploads with one URL exactly one
creates that object, and the other gets ``upload-url-used``. Only an upload that
succeeds uses the URL up: a refused file (413, 415, 422) never claims it, and an
upload that fails after claiming (storage or broker down) gives the claim back,
so the browser may retry until the URL expires. Claims are removed once their
URL has expired (the expiry alone refuses it from then on).

CORS is answered on the upload route only, for the configured origins only; a
request from any other cross-origin page is refused before its body is read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ingest.sniff import InputFormat
from ingest.validate import check_type
from pinhole import cache_policy
from pinhole.domain.keys import UPLOAD_CLAIMS_PREFIX, upload_claim_expiry, upload_claim_key
from pinhole.domain.record import encode_metadata, validate_owner
from pinhole.errors import (
    BadRequest,
    FormatNotAllowed,
    ObjectNotFound,
    OriginNotAllowed,
    TransientError,
    UploadUrlExpired,
    UploadUrlInvalid,
    UploadUrlsDisabled,
    UploadUrlUsed,
)
from pinhole.ports import BlobStore
from pinhole.settings import Settings, UploadUrls

log = logging.getLogger("pinhole.ingest")

UPLOAD_PATH = "/v1/uploads/{token}"
# Bound into every MAC, so a key shared with another signer (the edge's signed
# URLs) can never make a token here, nor the other way round.
_CONTEXT = b"pinhole-upload-url-v1."
_ALL_FORMATS = tuple(f.value for f in InputFormat)
# The headers a browser's upload may send (besides the CORS-safelisted ones).
_ALLOWED_HEADERS = ("content-type", "x-request-id")
_EXPOSED_HEADERS = "Location, X-Request-ID"
_CREATE_FIELDS = frozenset({"owner", "expires_in", "max_bytes", "formats", "metadata", "private"})
_MAX_CREATE_BODY = 16 * 1024


@dataclass(frozen=True)
class Claims:
    """What an upload URL allows, all of it inside the signed token."""

    upload_id: str
    owner: str
    expires_at: int  # unix seconds
    max_bytes: int
    formats: tuple[str, ...]
    metadata: dict[str, Any] | None
    # The record the upload makes is private (README "Private records").
    private: bool = False

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.upload_id,
            "owner": self.owner,
            "exp": self.expires_at,
            "max": self.max_bytes,
            "fmt": list(self.formats),
            "meta": self.metadata,
        }
        if self.private:
            # Only when set: a public upload URL's token is what it always was.
            body["prv"] = True
        return body

    @classmethod
    def from_json(cls, body: object) -> Claims:
        """Types are checked even though the MAC vouches for the body: a bug
        that signs a bad token must not become a crash here."""
        if not isinstance(body, dict):
            raise UploadUrlInvalid()
        upload_id, owner, exp = body.get("id"), body.get("owner"), body.get("exp")
        max_bytes, formats, meta = body.get("max"), body.get("fmt"), body.get("meta")
        private = body.get("prv", False)
        if not (
            isinstance(upload_id, str)
            and isinstance(owner, str)
            and isinstance(exp, int)
            and isinstance(max_bytes, int)
            and isinstance(formats, list)
            and all(isinstance(f, str) for f in formats)
            and (meta is None or isinstance(meta, dict))
            and isinstance(private, bool)
        ):
            raise UploadUrlInvalid()
        return cls(upload_id, owner, exp, max_bytes, tuple(formats), meta, private)

    def check_head(self, head: bytes) -> InputFormat:
        """The upload's type check (``check_type``) narrowed to the allowed formats."""
        fmt = check_type(head)
        if fmt.value not in self.formats:
            raise FormatNotAllowed(
                f"This upload URL takes {', '.join(self.formats)}; the file is {fmt.value}."
            )
        return fmt


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: str, payload: str) -> bytes:
    return hmac.new(key.encode(), _CONTEXT + payload.encode(), hashlib.sha256).digest()


def sign(claims: Claims, key: str) -> str:
    """The token: base64url(JSON claims) "." base64url(HMAC-SHA256)."""
    payload = _b64(json.dumps(claims.to_json(), separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(key, payload))}"


def verify(token: str, keys: list[str], *, now: float | None = None) -> Claims:
    """The claims of a token signed by any of ``keys``; ``UploadUrlInvalid`` for
    anything else, ``UploadUrlExpired`` once it has expired."""
    payload, dot, signature = token.partition(".")
    try:
        presented = _unb64(signature)
        raw = _unb64(payload)
    except (binascii.Error, ValueError):
        raise UploadUrlInvalid() from None
    if not dot or not payload:
        raise UploadUrlInvalid()
    matched = False
    for key in keys:  # every key, so timing does not say which one matched
        matched |= hmac.compare_digest(presented, _mac(key, payload))
    if not matched:
        raise UploadUrlInvalid()
    try:
        claims = Claims.from_json(json.loads(raw))
    except ValueError:
        raise UploadUrlInvalid() from None
    if claims.expires_at <= (time.time() if now is None else now):
        raise UploadUrlExpired(
            f"This upload URL expired at {_iso(claims.expires_at)}; ask for a new one."
        )
    return claims


def _iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def enabled(config: UploadUrls) -> list[str]:
    """The signing keys, or ``UploadUrlsDisabled`` without any."""
    if not config.signing_keys:
        raise UploadUrlsDisabled(
            "Upload URLs are disabled: configure PINHOLE_UPLOAD_URLS__SIGNING_KEYS."
        )
    return config.signing_keys


# ----------------------------------------------------------------- creating


def _whole_number(body: Mapping[str, object], name: str, default: int, most: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= most:
        raise BadRequest(f"{name} is a whole number from 1 to {most}.")
    return value


def _formats(body: Mapping[str, object]) -> tuple[str, ...]:
    value = body.get("formats")
    if value is None:
        return _ALL_FORMATS
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(f, str) and f in _ALL_FORMATS for f in value)
    ):
        raise BadRequest(f"formats is a non-empty list of {', '.join(_ALL_FORMATS)}.")
    return tuple(f for f in _ALL_FORMATS if f in value)


def claims_from_request(body: Mapping[str, object], settings: Settings) -> Claims:
    """The claims ``POST /v1/upload-urls`` asks for, checked as an upload with a
    record would be (owner, metadata) before anything is signed."""
    unknown = set(body) - _CREATE_FIELDS
    if unknown:
        raise BadRequest(f"Unknown fields {sorted(unknown)}; known: {sorted(_CREATE_FIELDS)}.")
    config = settings.upload_urls
    expires_in = _whole_number(
        body, "expires_in", config.default_expires_seconds, config.max_expires_seconds
    )
    limit = settings.limits.max_upload_bytes
    metadata = body.get("metadata")
    if metadata is not None:
        encode_metadata(metadata)
        assert isinstance(metadata, dict)
    private = body.get("private", False)
    if not isinstance(private, bool):
        raise BadRequest("private is true or false.")
    return Claims(
        upload_id=secrets.token_hex(16),
        owner=validate_owner(body.get("owner")),
        expires_at=int(time.time()) + expires_in,
        max_bytes=_whole_number(body, "max_bytes", limit, limit),
        formats=_formats(body),
        metadata=metadata,
        private=private,
    )


async def json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise BadRequest("Send a JSON object (Content-Type: application/json).")
    if request.content_length is not None and request.content_length > _MAX_CREATE_BODY:
        raise BadRequest(f"The JSON body may hold {_MAX_CREATE_BODY} bytes.")
    raw = await request.content.read(_MAX_CREATE_BODY + 1)
    if len(raw) > _MAX_CREATE_BODY:
        raise BadRequest(f"The JSON body may hold {_MAX_CREATE_BODY} bytes.")
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("The body is not JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    return body


def upload_url_view(claims: Claims, token: str, settings: Settings) -> dict[str, Any]:
    """The answer of ``POST /v1/upload-urls``. The record's id is not known yet
    (the store makes it with the record): it comes in the upload's answer, and
    ``upload_id`` names the upload until then."""
    return {
        "url": settings.status_base_url + UPLOAD_PATH.format(token=token),
        "upload_id": claims.upload_id,
        "expires_at": _iso(claims.expires_at),
        "owner": claims.owner,
        "max_bytes": claims.max_bytes,
        "formats": list(claims.formats),
        "private": claims.private,
    }


# ----------------------------------------------------------------- claiming

_JSON = "application/json"


class Claim:
    """The one use of an upload URL, taken with a conditional put."""

    def __init__(self, store: BlobStore, claims: Claims) -> None:
        self.store = store
        self.claims = claims
        self.key = upload_claim_key(claims.expires_at, claims.upload_id)
        self._nonce = secrets.token_hex(8)
        self.held = False

    async def take(self) -> None:
        """Raise ``UploadUrlUsed`` unless this upload is the one that claims it."""
        body = json.dumps(
            {"upload_id": self.claims.upload_id, "nonce": self._nonce, "claimed_at": time.time()}
        ).encode()
        created = await self.store.put(self.key, body, content_type=_JSON, if_absent=True)
        # A put retried after a lost answer finds its own first attempt.
        if not created and not await self._ours():
            raise UploadUrlUsed()
        self.held = True

    async def _ours(self) -> bool:
        try:
            found = json.loads((await self.store.get(self.key)).body)
        except (ObjectNotFound, ValueError):
            return False
        return isinstance(found, dict) and found.get("nonce") == self._nonce

    async def give_back(self) -> None:
        """After a failure that was not the file's fault: the URL may be used again.
        Best effort: a store that is down keeps the claim (the URL stays used)."""
        if not self.held:
            return
        self.held = False
        try:
            if await self._ours():
                await self.store.delete(self.key)
        except TransientError as exc:
            log.warning(
                "could not give back an upload URL's claim",
                extra={"upload_id": self.claims.upload_id, "error": str(exc)},
            )


async def sweep_claims(store: BlobStore, *, now: float | None = None) -> int:
    """Remove the claims of URLs that have expired; how many went. Claims list in
    expiry order, so the pass stops at the first URL still alive."""
    cutoff = time.time() if now is None else now
    removed = 0
    async for info in store.list(UPLOAD_CLAIMS_PREFIX):
        expiry = upload_claim_expiry(info.key)
        if expiry is None:
            continue
        if expiry > cutoff:
            break
        await store.delete(info.key)
        removed += 1
    return removed


def claim_sweeper_ctx(
    store: BlobStore, interval_seconds: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run() -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                removed = await sweep_claims(store)
            except TransientError as exc:
                log.warning("upload claim sweep failed", extra={"error": str(exc)})
                continue
            if removed:
                log.info("expired upload claims removed", extra={"removed": removed})

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(), name="upload-claim-sweep")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


# ----------------------------------------------------------------- CORS


def _same_host(origin: str, request: web.Request) -> bool:
    return urlsplit(origin).netloc == request.host


def cors_headers(request: web.Request, config: UploadUrls) -> dict[str, str]:
    """CORS headers for a configured origin; none for any other. A request from a
    page of another origin that is not configured is refused outright
    (``OriginNotAllowed``): a simple multipart POST needs no preflight, and must
    not use a URL up only to have the browser hide the answer."""
    origin = request.headers.get("Origin")
    if origin is None:
        return {}
    if origin in config.cors_origins:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": _EXPOSED_HEADERS,
            "Vary": "Origin",
        }
    if _same_host(origin, request):
        return {}
    raise OriginNotAllowed(f"Pages on {origin[:100]} may not upload with upload URLs.")


async def preflight(request: web.Request, config: UploadUrls) -> web.Response:
    """``OPTIONS`` on the upload route: the allowed origin, method and headers, or
    403 ``origin-not-allowed`` with no CORS headers at all."""
    origin = request.headers.get("Origin", "")
    method = request.headers.get("Access-Control-Request-Method", "")
    asked = request.headers.get("Access-Control-Request-Headers", "")
    headers = {h.strip().lower() for h in asked.split(",") if h.strip()}
    if origin not in config.cors_origins:
        raise OriginNotAllowed(f"Pages on {origin[:100] or 'no origin'} may not upload here.")
    if method != "POST" or not headers <= set(_ALLOWED_HEADERS):
        raise OriginNotAllowed(
            f"Only POST with the headers {', '.join(_ALLOWED_HEADERS)} is allowed."
        )
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": ", ".join(_ALLOWED_HEADERS),
            "Access-Control-Max-Age": str(config.cors_max_age_seconds),
            "Vary": "Origin",
            "Cache-Control": cache_policy.API,
        },
    )
