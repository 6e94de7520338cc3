"""Stable URLs by alias: ``GET|HEAD /a/<owner>/<alias>/<preset>[.<ext>]``.

An owner's alias (``avatar``) names one of the owner's records at a time, and
the record names an image. The stable URL answers a short-cached redirect
(``cache_policy.ALIAS``) to the immutable ladder URL of that image, so the bytes
themselves stay cached for a year under their own URL, and an ``<img>`` that
points at the alias follows it when it moves.

The edge keeps no copy of the resolution in its hot caches (one indexed query
on the owner's shard per request that reaches it), so a move has nothing to
purge there; the CDN in front caches the redirect, tagged with the alias's and
the owner's surrogate keys, and ``pinhole cdn-purge`` purges them on every
``alias.moved`` event.
"""

from __future__ import annotations

from aiohttp import web

from pinhole import cache_policy
from pinhole.domain.keys import InvalidVariantPath, parse_alias_name, variant_path
from pinhole.domain.record import validate_alias, validate_owner
from pinhole.errors import ImagePrivate, NotFound
from pinhole.events import alias_surrogate_key
from pinhole.ports import RecordStore
from server.app import EDGE_KEY
from server.privacy import Visibility

ALIAS_ROUTE = "/a/{owner}/{alias}/{name}"
RECORDS_KEY = web.AppKey("edge_records", RecordStore)


async def serve_alias(request: web.Request) -> web.Response:
    owner = validate_owner(request.match_info["owner"])
    alias = validate_alias(request.match_info["alias"])
    try:
        preset, fmt = parse_alias_name(request.match_info["name"])
    except InvalidVariantPath as exc:
        raise NotFound(f"No such URL: {exc}.") from None
    record = await request.app[RECORDS_KEY].get_by_alias(owner, alias)
    if record.private:
        # Refused here, not redirected: the redirect would name the image (whose
        # unsigned URL is refused anyway) to anyone who knows the alias.
        raise ImagePrivate("The alias names a private record; use its signed URLs.")
    tags = f"{alias_surrogate_key(owner, alias)} {alias_surrogate_key(owner)}"
    return web.Response(
        status=302,
        headers={
            "Location": variant_path(preset, record.image_id, fmt),
            "Cache-Control": cache_policy.ALIAS,
            "Surrogate-Key": tags,
            "Cache-Tag": tags.replace(" ", ","),
            "Access-Control-Allow-Origin": "*",
            "X-Content-Type-Options": "nosniff",
        },
    )


def configure_aliases(app: web.Application, records: RecordStore) -> None:
    """The alias routes, answering from ``records`` (the caller closes it); and
    the edge's knowledge of which images are private, from the same store
    (``server.privacy``), once ``server.app.configure_edge`` has run."""
    app[RECORDS_KEY] = records
    if EDGE_KEY in app:
        edge = app[EDGE_KEY]
        edge.visibility = Visibility(records, edge.store, edge.cfg.visibility_ttl_seconds)
    app.router.add_get(ALIAS_ROUTE, serve_alias)
