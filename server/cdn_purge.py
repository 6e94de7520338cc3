"""``pinhole cdn-purge``: a deleted image leaves the CDN caches in front of the edge.

``DELETE /v1/images/{id}`` drops the image from storage and Redis and publishes
``image.deleted``; each edge process drops its own copies (``server.purge``).
A CDN in front keeps serving the image's URLs until their max-age, a year for
immutable variants, unless it is told. This role tells it: it reads the events
topic in one consumer group shared by all its replicas (one purge per delete)
and purges every configured cache (``server.cdn_caches``). The offset is
committed once every cache is purged or given up on, so a purger stopped
half-way purges that image again when it starts: purges are idempotent.

A cache that does not answer is retried with backoff, ``attempts`` times, then
given up on for that image, logged as an error and counted, so that one cache
down for long does not hold every later delete back. A refusal (a 4xx: the
purger's address not allowed) is not retried: it is a setting to fix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from metrics.definitions import CDN_PURGES
from pinhole.domain.ids import ImageId
from pinhole.errors import CdnRefused, CdnUnavailable
from pinhole.ports import CdnCache
from pinhole.retry import retry_transient

log = logging.getLogger("pinhole.cdn_purge")


def purge_group(consumer_group: str) -> str:
    """The one group every ``cdn-purge`` replica shares."""
    return f"{consumer_group}-cdn-purge"


class CdnPurger:
    """Purges one image from every configured CDN cache at once."""

    def __init__(
        self, caches: Sequence[CdnCache], *, attempts: int, cap_seconds: float = 30.0
    ) -> None:
        self.caches = caches
        self.attempts = attempts
        self.cap_seconds = cap_seconds

    async def purge(self, image_id: ImageId) -> None:
        def purge(cache: CdnCache) -> Callable[[], Awaitable[int]]:
            return lambda: cache.purge(image_id)

        await asyncio.gather(
            *(self._purge(cache, purge(cache), {"id": image_id}) for cache in self.caches)
        )

    async def purge_alias(self, owner: str, alias: str | None) -> None:
        """The cached redirects of an alias that moved (``None``: every alias of
        a deleted owner)."""

        def purge(cache: CdnCache) -> Callable[[], Awaitable[int]]:
            return lambda: cache.purge_alias(owner, alias)

        where = {"owner": owner, "alias": alias}
        await asyncio.gather(*(self._purge(cache, purge(cache), where) for cache in self.caches))

    async def _purge(
        self, cache: CdnCache, purge: Callable[[], Awaitable[int]], what: Mapping[str, object]
    ) -> None:
        try:
            purged = await retry_transient(
                purge,
                what=f"purge {cache.name}",
                attempts=self.attempts,
                cap_seconds=self.cap_seconds,
            )
        except (CdnUnavailable, CdnRefused) as err:
            outcome = "refused" if isinstance(err, CdnRefused) else "unavailable"
            CDN_PURGES.labels(outcome=outcome).inc()
            log.error(
                "could not purge a CDN cache; it serves what it holds until its max-age",
                extra={**what, "cache": cache.name, "outcome": outcome, "error": str(err)},
            )
            return
        CDN_PURGES.labels(outcome="purged").inc()
        log.info("purged a CDN cache", extra={**what, "cache": cache.name, "entries": purged})
