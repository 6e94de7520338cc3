"""The ingest HTTP app: ``POST /v1/images``, ``GET`` and ``DELETE /v1/images/{id}``.

An upload passes, in order: the header checks (token, declared length, shape,
a free slot: ``ingest.admission``), the streamed body (size and time limits,
type sniffed from the first bytes: ``ingest.body``, ``ingest.spool``), then the
file checks (``ingest.validate``). Only then is anything stored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid

from aiohttp import web

from ingest.accept import admit_spooled, enqueue_admitted
from ingest.admission import UploadSlots, admit, expect_continue
from ingest.auth import require_token
from ingest.body import body_chunks
from ingest.delete import LocalPurge, delete_image
from ingest.spool import Spool
from ingest.validate import check_type
from metrics.definitions import IMAGE_DELETES, UPLOAD_BYTES, UPLOADS
from pinhole import cache_policy
from pinhole.domain.ids import ImageId, InvalidImageId, parse_image_id
from pinhole.domain.keys import status_url
from pinhole.domain.manifest import Manifest
from pinhole.errors import (
    BadRequest,
    NotFound,
    PinholeError,
    QueueUnavailable,
    RequestTimeout,
    ServiceUnavailable,
    TransientError,
)
from pinhole.manifests import load_manifest
from pinhole.ports import BlobStore, HotCache, JobQueue
from pinhole.settings import Settings

log = logging.getLogger("pinhole.ingest")

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", BlobStore)
QUEUE_KEY = web.AppKey("queue", JobQueue)
CACHE_KEY = web.AppKey("cache", HotCache)
SLOTS_KEY = web.AppKey("upload_slots", UploadSlots)
LOCAL_PURGE_KEY: web.AppKey[LocalPurge] = web.AppKey("local_purge")


def _public(manifest: Manifest, settings: Settings) -> dict[str, object]:
    return manifest.public_view(settings.edge_base_url, settings.status_base_url)


async def upload(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    slots = request.app[SLOTS_KEY]
    request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
    try:
        admit(request, settings, slots)
    except PinholeError as exc:
        _count(exc.code, 0)
        raise
    with slots.claim():
        return await _accept(request, settings, request_id)


async def _accept(request: web.Request, settings: Settings, request_id: str) -> web.Response:
    store = request.app[STORE_KEY]
    limits = settings.limits
    spool = Spool()
    try:
        try:
            async with asyncio.timeout(limits.request_timeout_seconds):
                spooled = await spool.write_stream(
                    body_chunks(request, limits), limits.max_upload_bytes, check_type
                )
        except TimeoutError:
            raise RequestTimeout(
                f"The upload took over {limits.request_timeout_seconds:g} seconds."
            ) from None
        admitted = await admit_spooled(store, spooled, limits)
        if admitted.existing is not None and admitted.duplicate:
            _count("duplicate", spool.received)
            return web.json_response(
                _public(admitted.existing, settings),
                status=200,
                headers={"Cache-Control": cache_policy.MANIFEST, "X-Request-ID": request_id},
            )
    except PinholeError as exc:
        _count(exc.code, spool.received)
        raise
    except TransientError:
        _count(ServiceUnavailable.code, spool.received)
        raise
    finally:
        await spool.close()
    size = spool.received

    try:
        manifest = await enqueue_admitted(
            store, request.app[QUEUE_KEY], settings.kafka, admitted, request_id
        )
    except QueueUnavailable:
        _count("queue-unavailable", size)
        log.warning("broker down; upload kept pending", extra={"image_id": admitted.image_id})
        raise ServiceUnavailable(
            "The upload is stored but could not be queued; it will be processed later, "
            "or retry shortly."
        ) from None
    _count("accepted", size)
    log.info(
        "upload accepted",
        extra={"image_id": admitted.image_id, "bytes": size, "request_id": request_id},
    )
    return web.json_response(
        _public(manifest, settings),
        status=202,
        headers={
            "Location": status_url(settings.status_base_url, admitted.image_id),
            "Cache-Control": cache_policy.ERROR,
            "X-Request-ID": request_id,
        },
    )


def _count(result: str, size: int) -> None:
    UPLOADS.labels(result).inc()
    UPLOAD_BYTES.labels(result).inc(size)


def _image_id(request: web.Request) -> ImageId:
    try:
        return parse_image_id(request.match_info["image_id"])
    except InvalidImageId:
        raise BadRequest("An image id is 32 lowercase hex characters.") from None


async def get_status(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    manifest = await load_manifest(request.app[STORE_KEY], _image_id(request))
    if manifest is None:
        raise NotFound("No image with this id.")
    return web.json_response(
        _public(manifest, settings), headers={"Cache-Control": cache_policy.MANIFEST}
    )


async def delete(request: web.Request) -> web.Response:
    """Remove the image everywhere: 204, or 404 if there is no such image."""
    settings = request.app[SETTINGS_KEY]
    try:
        require_token(request, settings.auth)
        image_id = _image_id(request)
        found = await delete_image(
            image_id,
            store=request.app[STORE_KEY],
            cache=request.app.get(CACHE_KEY),
            queue=request.app[QUEUE_KEY],
            kafka=settings.kafka,
            local_purge=request.app.get(LOCAL_PURGE_KEY),
        )
    except PinholeError as exc:
        IMAGE_DELETES.labels(exc.code).inc()
        raise
    except TransientError:
        IMAGE_DELETES.labels(ServiceUnavailable.code).inc()
        raise
    if not found:
        IMAGE_DELETES.labels(NotFound.code).inc()
        raise NotFound("No image with this id.")
    IMAGE_DELETES.labels("deleted").inc()
    return web.Response(status=204, headers={"Cache-Control": cache_policy.ERROR})


def ingest_routes(settings: Settings, slots: UploadSlots) -> list[web.RouteDef]:
    expect = functools.partial(expect_continue, settings=settings, slots=slots)
    return [
        web.post("/v1/images", upload, expect_handler=expect),
        web.get("/v1/images/{image_id}", get_status),
        web.delete("/v1/images/{image_id}", delete),
    ]


def configure_ingest(
    app: web.Application,
    settings: Settings,
    store: BlobStore,
    queue: JobQueue,
    *,
    cache: HotCache | None = None,
    local_purge: LocalPurge | None = None,
) -> None:
    """``cache`` is the shared hot cache a delete purges; ``local_purge`` drops
    entries from an in-process cache (the edge L1 when ``pinhole up`` runs both)."""
    slots = UploadSlots(settings.limits.max_concurrent_uploads)
    app[SETTINGS_KEY] = settings
    app[STORE_KEY] = store
    app[QUEUE_KEY] = queue
    app[SLOTS_KEY] = slots
    if cache is not None:
        app[CACHE_KEY] = cache
    if local_purge is not None:
        app[LOCAL_PURGE_KEY] = local_purge
    app.add_routes(ingest_routes(settings, slots))
