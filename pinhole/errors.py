"""Errors with a stable kebab-case code and the HTTP status a client should see.

Two families: ``PinholeError`` is what a request or a job can fail with and maps
to a JSON error body; the port errors (``StorageUnavailable``, ...) are what
adapters raise after translating vendor exceptions, so services never import a
vendor's exception types.

This module is the one catalogue of public codes: every code a client can see is
the ``code`` of a ``PinholeError`` class here (``catalogue()`` lists them, and a
test holds the README's list equal to it).
"""

from __future__ import annotations

from collections.abc import Mapping

from pinhole import cache_policy


class PinholeError(Exception):
    """An error that a client may see: ``{"error": {"code", "message"}}``."""

    code = "internal-error"
    status = 500
    retry_after: int | None = None
    # Errors are never cached; a pending image may be, for a few seconds.
    cache_control = cache_policy.ERROR

    def __init__(
        self, message: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.headers = dict(headers or {})


class InternalError(PinholeError):
    """Internal error."""


class HttpError(PinholeError):
    """The request failed (an HTTP status without a code of its own)."""

    code = "http-error"
    status = 400


class BadRequest(PinholeError):
    """The request is malformed."""

    code = "bad-request"
    status = 400


class EmptyBody(BadRequest):
    """The request carried no image bytes."""

    code = "empty-body"


class Unauthorized(PinholeError):
    """A valid bearer token is required."""

    code = "unauthorized"
    status = 401


class Forbidden(PinholeError):
    """This request is not allowed."""

    code = "forbidden"
    status = 403


class BadSignature(Forbidden):
    """The URL's signature does not match."""

    code = "bad-signature"


class SignatureExpired(Forbidden):
    """The signed URL has expired."""

    code = "signature-expired"


class ImagePrivate(Forbidden):
    """Every record of the image is private: its URLs need a valid, expiring signature."""

    code = "image-private"


class NotFound(PinholeError):
    """No such resource."""

    code = "not-found"
    status = 404


class ImagePending(NotFound):
    """The image is still being processed."""

    code = "image-pending"
    retry_after = cache_policy.PENDING_SECONDS
    cache_control = cache_policy.PENDING


class ImageFailed(NotFound):
    """The image could not be processed."""

    code = "image-failed"


class MethodNotAllowed(PinholeError):
    """This method is not allowed on this resource."""

    code = "method-not-allowed"
    status = 405


class PayloadTooLarge(PinholeError):
    """The upload is larger than the configured limit."""

    code = "payload-too-large"
    status = 413


class UriTooLong(PinholeError):
    """The request URI is too long."""

    code = "uri-too-long"
    status = 414


class UnsupportedMediaType(PinholeError):
    """The bytes are not an image format we accept."""

    code = "unsupported-media-type"
    status = 415


class RangeNotSatisfiable(PinholeError):
    """The range starts past the end of the body."""

    code = "range-not-satisfiable"
    status = 416


class ExpectationFailed(PinholeError):
    """Only Expect: 100-continue is known."""

    code = "expectation-failed"
    status = 417


class UndecodableImage(PinholeError):
    """The image is damaged or truncated and cannot be decoded."""

    code = "undecodable-image"
    status = 422


class ImageTooLarge(PinholeError):
    """The image's dimensions, pixel count or frame count exceed the limits."""

    code = "image-too-large"
    status = 422


class MetadataTooLarge(ImageTooLarge):
    """The image carries more metadata (EXIF, ICC, XMP, text) than the limit."""

    code = "metadata-too-large"


class RequestTimeout(PinholeError):
    """The upload body did not arrive in time."""

    code = "request-timeout"
    status = 408


class RateLimited(PinholeError):
    """Too many uploads are in progress; retry shortly."""

    code = "rate-limited"
    status = 429
    retry_after = 1


class RateLimitExceeded(RateLimited):
    """This client has used its quota for now; retry after Retry-After seconds.

    Not ``rate-limited``, which says the server is busy (its upload slots are
    full) and any client may retry at once: this one is about the client, and
    retrying before ``Retry-After`` is refused again. ``headers`` carry the
    RateLimit-Policy and RateLimit fields of the IETF draft."""

    code = "rate-limit-exceeded"

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, headers=headers)
        self.retry_after = max(1, retry_after)


class HeadersTooLarge(PinholeError):
    """Too many headers, or a header line or the request line is too long."""

    code = "headers-too-large"
    status = 431


class PresetMismatch(PinholeError):
    """This image was rendered with another preset table than this server's."""

    code = "preset-mismatch"
    status = 503
    retry_after = 30


class ServiceUnavailable(PinholeError):
    """A dependency is unavailable; try again shortly."""

    code = "service-unavailable"
    status = 503
    retry_after = 5


def catalogue() -> dict[str, type[PinholeError]]:
    """Every public code, with its class: the base and each subclass, however deep."""
    found: dict[str, type[PinholeError]] = {PinholeError.code: PinholeError}
    todo: list[type[PinholeError]] = [PinholeError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.setdefault(sub.code, sub)
            todo.append(sub)
    return found


def for_status(status: int) -> type[PinholeError]:
    r"""The class an HTTP status with no more specific cause answers with (aiohttp's
    own ``HTTPException``\s): the first catalogue entry of that status, else
    ``HttpError``."""
    for cls in _BY_STATUS:
        if cls.status == status:
            return cls
    return HttpError


# The plain answer for each status, in the order ``for_status`` looks.
_BY_STATUS: tuple[type[PinholeError], ...] = (
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UriTooLong,
    UnsupportedMediaType,
    RangeNotSatisfiable,
    ExpectationFailed,
    HeadersTooLarge,
    RateLimited,
    InternalError,
    ServiceUnavailable,
)


# --- Records (pinhole.domain.record, the RecordStore port). ----------------


class InvalidOwner(BadRequest):
    """An owner name must be 1 to 64 URL-safe characters (letters, digits, '.', '_', '-'),
    starting with a letter or digit."""

    code = "invalid-owner"


class InvalidAlias(BadRequest):
    """An alias must be 1 to 64 URL-safe characters (letters, digits, '.', '_', '-'),
    starting with a letter or digit."""

    code = "invalid-alias"


class InvalidMetadata(BadRequest):
    """Metadata must be a JSON object of at most 4 KiB serialised."""

    code = "invalid-metadata"


class InvalidRecordId(BadRequest):
    """A record id is a decimal string of a 63-bit positive integer."""

    code = "invalid-record-id"


class InvalidCursor(BadRequest):
    """The cursor is not one this listing handed out."""

    code = "invalid-cursor"


class RecordNotFound(NotFound):
    """No such record."""

    code = "record-not-found"


class AliasNotFound(RecordNotFound):
    """This owner has no record with that alias."""

    code = "alias-not-found"


class AliasTaken(PinholeError):
    """Another record of this owner already has that alias."""

    code = "alias-taken"
    status = 409


class QuotaExceeded(Forbidden):
    """The owner's storage quota (bytes or images) has no room for this upload.

    403, not 413 or 429: the request is well formed and waiting does not help;
    the owner must delete records, or the operator raise the quota. ``kind`` is
    "bytes" or "images"."""

    code = "quota-exceeded"

    def __init__(self, message: str | None = None, *, kind: str = "bytes") -> None:
        super().__init__(message)
        self.kind = kind


# --- One-time upload URLs (ingest.upload_urls). ------------------------------


class UploadUrlsDisabled(NotFound):
    """Upload URLs are not configured on this server (no signing key)."""

    code = "upload-urls-disabled"


class UploadUrlInvalid(Forbidden):
    """The upload URL is not one this server signed: it was altered or garbled."""

    code = "upload-url-invalid"


class UploadUrlUsed(PinholeError):
    """The upload URL has been used already: each one takes one upload."""

    code = "upload-url-used"
    status = 409


class UploadUrlExpired(PinholeError):
    """The upload URL has expired."""

    code = "upload-url-expired"
    status = 410


class FormatNotAllowed(UnsupportedMediaType):
    """The image's format is not one this upload URL allows."""

    code = "format-not-allowed"


class OriginNotAllowed(Forbidden):
    """Browsers on this origin may not use upload URLs (not a configured CORS origin)."""

    code = "origin-not-allowed"


# --- Upload by URL (ingest.fetch): every refusal before any connection. -----


class InvalidUrl(BadRequest):
    """The url is not an absolute http(s) URL with a host name."""

    code = "invalid-url"


class UrlNotAllowed(BadRequest):
    """The url's scheme, port or host is not allowed for server-side fetches."""

    code = "url-not-allowed"


class UrlAddressNotAllowed(UrlNotAllowed):
    """The url's host is, or resolves to, an address that is not public
    (loopback, private, link-local, CGNAT, multicast, reserved, embedded IPv4...)."""

    code = "url-address-not-allowed"


class UrlFetchFailed(PinholeError):
    """The image at the url could not be fetched (connection, TLS or HTTP error)."""

    code = "url-fetch-failed"
    status = 422


class UrlUnresolvable(UrlFetchFailed):
    """The url's host name does not resolve."""

    code = "url-unresolvable"


class UrlFetchTimeout(UrlFetchFailed):
    """The image at the url did not arrive in time."""

    code = "url-fetch-timeout"


class UrlTooManyRedirects(UrlFetchFailed):
    """The url redirected more times than allowed."""

    code = "url-too-many-redirects"


# --- Port errors: raised by adapters, never carry vendor types. -------------


class PortError(Exception):
    """Base of errors raised by adapters behind the ports."""


class TransientError(PortError):
    """The dependency failed in a way that may heal: retry with backoff."""


class StorageUnavailable(TransientError):
    """The blob store could not be reached or failed."""


class QueueUnavailable(TransientError):
    """The job queue could not be reached or failed."""


class CacheUnavailable(TransientError):
    """The hot cache could not be reached or failed."""


class CdnUnavailable(TransientError):
    """A CDN cache could not be reached to purge, or failed."""


class RecordStoreUnavailable(ServiceUnavailable, TransientError):
    """The record store shard is unavailable; try again shortly.

    Both a client error (503 with Retry-After, naming the shard) and a transient
    port error (``retry_with_backoff`` retries it). ``shard`` is the virtual shard
    (``None`` for a call that spans shards: by image, ping, schema) and ``server``
    the shard server it maps to."""

    code = "record-store-unavailable"

    def __init__(self, shard: int | None, server: str, reason: str) -> None:
        where = (
            f"shard {shard:03x} (server {server!r})" if shard is not None else f"server {server!r}"
        )
        super().__init__(f"The record store {where} is unavailable: {reason}")
        self.shard = shard
        self.server = server
        self.reason = reason


class CdnRefused(PortError):
    """A CDN cache refused a purge (say, the purger's address is not allowed)."""


class ObjectNotFound(PortError):
    """The blob store has no object at this key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key
