"""Edge routes: ``GET|HEAD /<preset>/ab/cd/ef/<id>[.<ext>]``."""

from __future__ import annotations

from aiohttp import web

from metrics.definitions import BYTES_SERVED
from pinhole import cache_policy
from pinhole.domain.ids import ImageId
from pinhole.domain.keys import InvalidVariantPath, parse_variant_path, variant_key
from pinhole.domain.ladder import Format, FormatClass, format_for_class
from pinhole.domain.manifest import Status
from pinhole.errors import NotFound
from pinhole.manifests import load_manifest
from pinhole.ports import BlobStore
from pinhole.web import error_response
from server.headers import etag_matches, variant_headers
from server.negotiate import accept_class
from server.tiers import VariantTiers

TIERS_KEY = web.AppKey("tiers", VariantTiers)
EDGE_STORE_KEY = web.AppKey("edge_store", BlobStore)


async def _fallback_has_alpha(store: BlobStore, image_id: ImageId) -> bool | None:
    manifest = await load_manifest(store, image_id)
    return None if manifest is None else manifest.source.has_alpha


async def serve_variant(request: web.Request) -> web.StreamResponse:
    info = request.match_info
    try:
        wanted = parse_variant_path(
            info["preset"], f"{info['a']}/{info['b']}/{info['c']}", info["name"]
        )
    except InvalidVariantPath as exc:
        raise NotFound(f"No such image URL: {exc}.") from None
    tiers = request.app[TIERS_KEY]
    store = request.app[EDGE_STORE_KEY]
    negotiated = wanted.fmt is None
    fmt: Format
    if wanted.fmt is not None:
        fmt = wanted.fmt
    else:
        fmt_class = accept_class(request.headers.get("Accept"))
        # Only the fallback class depends on the image (JPEG, or PNG with alpha).
        has_alpha = False
        if fmt_class is FormatClass.FALLBACK:
            alpha = await _fallback_has_alpha(store, wanted.image_id)
            if alpha is None:
                raise NotFound("No image with this id.")
            has_alpha = alpha
        fmt = format_for_class(fmt_class, has_alpha)
    found = await tiers.get(variant_key(wanted.preset, wanted.image_id, fmt))
    if found is None:
        return await _missing(store, wanted.image_id)
    entry, tier = found
    headers = variant_headers(entry, fmt, wanted.image_id, negotiated)
    if etag_matches(request.headers.get("If-None-Match"), entry.etag):
        del headers["Content-Type"]
        return web.Response(status=304, headers=headers)
    if request.method != "HEAD":
        BYTES_SERVED.labels(tier).inc(len(entry.body))
    return web.Response(body=entry.body, headers=headers)


async def _missing(store: BlobStore, image_id: ImageId) -> web.Response:
    manifest = await load_manifest(store, image_id)
    if manifest is None:
        raise NotFound("No image with this id.")
    if manifest.status is Status.PENDING:
        return error_response(
            404,
            "image-pending",
            "The image is still being processed.",
            retry_after=cache_policy.PENDING_SECONDS,
            cache_control=cache_policy.PENDING,
        )
    if manifest.status is Status.FAILED:
        code = manifest.failure.code if manifest.failure else "failed"
        return error_response(404, "image-failed", f"The image could not be processed ({code}).")
    return error_response(404, "variant-missing", "This variant of the image does not exist.")


def edge_routes() -> list[web.RouteDef]:
    return [web.get("/{preset}/{a}/{b}/{c}/{name}", serve_variant)]


def configure_edge(app: web.Application, tiers: VariantTiers, store: BlobStore) -> None:
    app[TIERS_KEY] = tiers
    app[EDGE_STORE_KEY] = store
    app.add_routes(edge_routes())
