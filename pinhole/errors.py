"""Errors with a stable kebab-case code and the HTTP status a client should see.

Two families: ``PinholeError`` is what a request or a job can fail with and maps
to a JSON error body; the port errors (``StorageUnavailable``, ...) are what
adapters raise after translating vendor exceptions, so services never import a
vendor's exception types.
"""

from __future__ import annotations


class PinholeError(Exception):
    """An error that a client may see: ``{"error": {"code", "message"}}``."""

    code = "internal-error"
    status = 500
    retry_after: int | None = None

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()


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


class NotFound(PinholeError):
    """No such resource."""

    code = "not-found"
    status = 404


class MethodNotAllowed(PinholeError):
    """This method is not allowed on this resource."""

    code = "method-not-allowed"
    status = 405


class PayloadTooLarge(PinholeError):
    """The upload is larger than the configured limit."""

    code = "payload-too-large"
    status = 413


class UnsupportedMediaType(PinholeError):
    """The bytes are not an image format we accept."""

    code = "unsupported-media-type"
    status = 415


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


class ServiceUnavailable(PinholeError):
    """A dependency is unavailable; try again shortly."""

    code = "service-unavailable"
    status = 503
    retry_after = 5


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


class CdnRefused(PortError):
    """A CDN cache refused a purge (say, the purger's address is not allowed)."""


class ObjectNotFound(PortError):
    """The blob store has no object at this key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key
