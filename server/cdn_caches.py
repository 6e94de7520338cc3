"""CDN caches a deleted image is purged from, one adapter per cdn_config/ setup.

Both speak HTTP to the cache's own purge interface, as cdn_config/ sets it up:

- varnish: ``PURGE /`` with ``xkey-purge: img-<id>`` drops every URL tagged with
  the image's surrogate key (xkey), signed renditions included. It answers
  ``200 Purged <n>``.
- nginx: ngx_cache_purge 2.3 has no tag or wildcard purge, so every ladder URL
  is purged by its cache key: ``GET /purge<path>``, once per Accept class for
  a negotiated URL (the key holds the class the purge request's Accept maps
  to) and once per format URL. ``200`` purged, ``404`` nothing cached there.
  Signed renditions cannot be listed from an id; they leave nginx at their
  max-age (the edge already answers 404 for them).

aiohttp's errors are translated here: ``CdnUnavailable`` for what a retry may
heal (no answer, a 5xx), ``CdnRefused`` for a 4xx (a purger's address missing
from the cache's allow list), which no retry heals.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator, Mapping

import aiohttp

from pinhole.domain.ids import ImageId
from pinhole.domain.keys import alias_path, variant_path
from pinhole.domain.ladder import Format, FormatClass, Preset, current
from pinhole.errors import CdnRefused, CdnUnavailable
from pinhole.events import alias_surrogate_key, surrogate_key
from pinhole.ports import CdnCache
from pinhole.settings import CdnPurge

# One Accept header per class, each mapping to that class in cdn_config/nginx's
# map (and in the edge's own negotiation).
ACCEPT_FOR_CLASS: Mapping[FormatClass, str] = {
    FormatClass.AVIF: "image/avif",
    FormatClass.WEBP: "image/webp",
    FormatClass.FALLBACK: "*/*",
}
_PURGED_COUNT = re.compile(rb"Purged (\d+)")


async def _send(
    session: aiohttp.ClientSession,
    cache: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    absent_ok: bool = False,
) -> bytes | None:
    """The body of a 2xx; ``None`` for a 404 when ``absent_ok``; else a port error."""
    try:
        async with session.request(method, url, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as err:
        raise CdnUnavailable(f"{cache}: {method} {url}: {type(err).__name__}: {err}") from err
    if 200 <= status < 300:
        return body
    if status == 404 and absent_ok:
        return None
    detail = f"{cache}: {method} {url} answered {status}: {body[:200]!r}"
    if status >= 500 or status in (408, 429):
        raise CdnUnavailable(detail)
    raise CdnRefused(detail)


class VarnishXkeyCache:
    """Varnish running cdn_config/varnish/pinhole.vcl: one purge by surrogate key."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.name = f"varnish {base_url}"
        self._url = base_url.rstrip("/") + "/"
        self._session = session

    async def purge(self, image_id: ImageId) -> int:
        return await self._purge_key(surrogate_key(image_id))

    async def purge_alias(self, owner: str, alias: str | None) -> int:
        # Every alias redirect carries its own key and its owner's.
        return await self._purge_key(alias_surrogate_key(owner, alias))

    async def _purge_key(self, key: str) -> int:
        body = await _send(self._session, self.name, "PURGE", self._url, {"xkey-purge": key})
        match = _PURGED_COUNT.search(body or b"")
        if match is None:
            raise CdnRefused(f"{self.name}: not an xkey purge answer: {body!r}")
        return int(match.group(1))


PathOf = Callable[[Preset, Format | None], str]


def _ladder_purge_requests(path_of: PathOf) -> Iterator[tuple[str, Mapping[str, str]]]:
    """``(path, headers)`` of every cache key a ladder of URLs can have: each
    negotiated URL once per Accept class, each format URL once."""
    for preset in current():
        for accept in ACCEPT_FOR_CLASS.values():
            yield path_of(preset, None), {"Accept": accept}
        for fmt in Format:
            yield path_of(preset, fmt), {}


def nginx_purge_requests(image_id: ImageId) -> Iterator[tuple[str, Mapping[str, str]]]:
    """Every cache key an image's ladder URLs can have."""
    return _ladder_purge_requests(lambda preset, fmt: variant_path(preset, image_id, fmt))


def nginx_alias_purge_requests(owner: str, alias: str) -> Iterator[tuple[str, Mapping[str, str]]]:
    """Every cache key an alias's stable URLs (``server.aliases``) can have."""
    return _ladder_purge_requests(lambda preset, fmt: alias_path(owner, alias, preset, fmt))


class NginxCachePurge:
    """nginx running cdn_config/nginx/pinhole-edge.conf (ngx_cache_purge)."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, concurrency: int) -> None:
        self.name = f"nginx {base_url}"
        self._base = base_url.rstrip("/") + "/purge"
        self._session = session
        self._concurrency = concurrency

    async def purge(self, image_id: ImageId) -> int:
        return await self._purge_all(list(nginx_purge_requests(image_id)))

    async def purge_alias(self, owner: str, alias: str | None) -> int:
        if alias is None:
            # No tag purge here, and an owner's aliases cannot be listed once the
            # owner is deleted: those redirects leave nginx at their short max-age.
            return 0
        return await self._purge_all(list(nginx_alias_purge_requests(owner, alias)))

    async def _purge_all(self, requests: list[tuple[str, Mapping[str, str]]]) -> int:
        slots = asyncio.Semaphore(self._concurrency)

        async def one(path: str, headers: Mapping[str, str]) -> bool:
            async with slots:
                body = await _send(
                    self._session, self.name, "GET", self._base + path, headers, absent_ok=True
                )
                return body is not None

        # Every request runs; the first error is raised after they all end, so
        # a retry repeats only what an absent key makes harmless.
        results = await asyncio.gather(
            *(one(path, headers) for path, headers in requests), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(1 for result in results if result)


def build_cdn_caches(settings: CdnPurge, session: aiohttp.ClientSession) -> list[CdnCache]:
    caches: list[CdnCache] = [VarnishXkeyCache(url, session) for url in settings.varnish_urls]
    caches += [NginxCachePurge(url, session, settings.concurrency) for url in settings.nginx_urls]
    return caches
