"""Cache-Control policy: the only place that decides how long anything may be cached."""

from __future__ import annotations

# Content-addressed variant bytes never change under their URL.
IMMUTABLE = "public, max-age=31536000, immutable"
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
