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
import time
import uuid

from aiohttp import web

from ingest.admission import UploadSlots, admit, expect_continue
from ingest.auth import require_token
from ingest.body import body_chunks
from ingest.delete import LocalPurge, delete_image
from ingest.jobs import publish_job
from ingest.pending import mark_pending
from ingest.spool import Spool
from ingest.validate import check_type, validate
from metrics.definitions import IMAGE_DELETES, UPLOAD_BYTES, UPLOADS
from pinhole import cache_policy
from pinhole.domain.ids import ImageId, InvalidImageId, image_id_from_digest, parse_image_id
from pinhole.domain.job import TranscodeJob
from pinhole.domain.keys import original_key, status_url
from pinhole.domain.manifest import Manifest, Status
from pinhole.errors import (
    BadRequest,
    NotFound,
    PinholeError,
    QueueUnavailable,
    RequestTimeout,
    ServiceUnavailable,
    TransientError,
)
from pinhole.manifests import load_manifest, save_manifest
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
        source = await asyncio.to_thread(validate, spooled, limits)
        image_id = image_id_from_digest(spooled.sha256)
        existing = await load_manifest(store, image_id)
        if existing is not None and existing.status is not Status.PENDING:
            _count("duplicate", spool.received)
            return web.json_response(
                _public(existing, settings),
                status=200,
                headers={"Cache-Control": cache_policy.MANIFEST, "X-Request-ID": request_id},
            )
        await store.put_file(
            original_key(image_id),
            spooled.path,
            content_type=f"image/{source.format}",
            if_absent=True,
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

    now = time.time()
    manifest = existing or Manifest(
        id=image_id, status=Status.PENDING, source=source, created_at=now, updated_at=now
    )
    # The pending manifest is the durable record of acceptance: written before the
    # job, so a lost message is healed by reconcile, never a lost upload. Its index
    # entry goes first, so reconcile can find every pending manifest.
    await mark_pending(store, image_id)
    if existing is None:
        await save_manifest(store, manifest, if_absent=True)
    job = TranscodeJob(
        image_id=image_id,
        original_key=original_key(image_id),
        source=source,
        submitted_at=manifest.created_at,
        request_id=request_id,
    )
    try:
        await publish_job(request.app[QUEUE_KEY], settings.kafka, job)
    except QueueUnavailable:
        _count("queue-unavailable", size)
        log.warning("broker down; upload kept pending", extra={"image_id": image_id})
        raise ServiceUnavailable(
            "The upload is stored but could not be queued; it will be processed later, "
            "or retry shortly."
        ) from None
    _count("accepted", size)
    log.info(
        "upload accepted", extra={"image_id": image_id, "bytes": size, "request_id": request_id}
    )
    return web.json_response(
        _public(manifest, settings),
        status=202,
        headers={
            "Location": status_url(settings.status_base_url, image_id),
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
