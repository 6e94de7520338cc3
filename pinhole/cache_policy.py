"""Cache-Control policy: the only place that decides how long anything may be cached."""

from __future__ import annotations

# Content-addressed variant bytes never change under their URL.
IMMUTABLE_SECONDS = 31536000
IMMUTABLE = f"public, max-age={IMMUTABLE_SECONDS}, immutable"
# A pending image will exist soon: let caches retry after a few seconds, not a year.
PENDING_SECONDS = 5
PENDING = f"public, max-age={PENDING_SECONDS}"
# Manifests change from pending to ready; clients poll them.
MANIFEST = "no-cache"
# A stable URL by alias redirects to the immutable URL of what the alias names
# now. A move purges the CDN (pinhole cdn-purge); this bounds a purge that was
# lost, and browsers, which nobody can purge.
ALIAS_SECONDS = 60
ALIAS = f"public, max-age={ALIAS_SECONDS}"
# Errors are never cached, by a CDN or by us.
ERROR = "no-store"
# API answers for one caller (the record API, usage, the event log, a CORS
# preflight of an upload URL): never stored anywhere.
API = "no-store"


# An expiring signed URL (server/signing.py): no cache may keep its answer past
# the URL's expiry, so it is fresh for the whole seconds left (rounded down) or
# the usual time, whichever is shorter. ``public`` for a public image's
# renditions; a private image's answer is ``private_until`` instead. With no whole
# second left (a URL accepted within the skew allowance past its expiry) it is
# not stored at all, rather than stored stale.


def expiring_signed(remaining_seconds: float) -> str:
    """A rendition for an expiring signed URL: ``IMMUTABLE``'s year at most."""
    return _public_until(remaining_seconds, IMMUTABLE_SECONDS)


def expiring_pending(remaining_seconds: float) -> str:
    """A pending image's 404 for an expiring signed URL: ``PENDING``'s seconds at most."""
    return _public_until(remaining_seconds, PENDING_SECONDS)


def _public_until(remaining_seconds: float, usual_seconds: int) -> str:
    seconds = min(int(remaining_seconds), usual_seconds)
    if seconds <= 0:
        return "no-store"
    return f"public, max-age={seconds}"


# A private image (every record of it private, server.privacy), served only for
# a valid expiring signature: ``private`` so no shared cache (a CDN, a proxy)
# stores it, and a browser keeps it no longer than the signature's remaining
# life. Never ``immutable``: the same bytes may be refused once the URL expires.


def private_until(remaining_seconds: float) -> str:
    """A private image's variant for a URL with ``remaining_seconds`` to live."""
    seconds = min(int(remaining_seconds), IMMUTABLE_SECONDS)
    if seconds <= 0:
        return "private, no-store"
    return f"private, max-age={seconds}"
