"""The ingest HTTP app: ``POST /v1/images`` and ``GET /v1/images/{id}``."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, web

from ingest.auth import require_token
from ingest.probe import probe_header
from ingest.sniff import looks_complete, sniff
from ingest.spool import Spool, Spooled
from metrics.definitions import JOBS_PUBLISHED, UPLOAD_BYTES, UPLOADS
from pinhole import cache_policy
from pinhole.domain.ids import ImageId, InvalidImageId, image_id_from_digest, parse_image_id
from pinhole.domain.job import SourceInfo, TranscodeJob
from pinhole.domain.keys import original_key, status_url
from pinhole.domain.manifest import Manifest, Status
from pinhole.errors import (
    BadRequest,
    EmptyBody,
    NotFound,
    PayloadTooLarge,
    PinholeError,
    QueueUnavailable,
    ServiceUnavailable,
    UndecodableImage,
    UnsupportedMediaType,
)
from pinhole.manifests import load_manifest, save_manifest
from pinhole.ports import BlobStore, JobQueue, Message
from pinhole.settings import Settings

log = logging.getLogger("pinhole.ingest")

_CHUNK = 256 * 1024
_RAW_TYPES = ("image/", "application/octet-stream")

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", BlobStore)
QUEUE_KEY = web.AppKey("queue", JobQueue)


async def _raw_chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(_CHUNK):
        yield chunk


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK):
        yield chunk


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The image bytes: the raw body, or the multipart field ``file``."""
    content_type = request.content_type
    if content_type == "multipart/form-data":
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("Nested multipart bodies are not accepted.")
            if part.name == "file":
                async for chunk in _part_chunks(part):
                    yield chunk
                return
            await part.release()
        raise BadRequest("The multipart body has no field named 'file'.")
    if not content_type.startswith(_RAW_TYPES):
        raise UnsupportedMediaType(
            "Send the image as the raw body with Content-Type image/*, "
            "or as multipart/form-data with a field named 'file'."
        )
    async for chunk in _raw_chunks(request):
        yield chunk


def _validate(spooled: Spooled, settings: Settings) -> SourceInfo:
    if spooled.size == 0:
        raise EmptyBody()
    fmt = sniff(spooled.head)
    if fmt is None:
        raise UnsupportedMediaType(
            "The bytes are not an accepted image format (JPEG, PNG, GIF, WebP, AVIF, HEIF)."
        )
    if not looks_complete(fmt, spooled.tail, spooled.size, spooled.head):
        raise UndecodableImage(f"The {fmt.value} file is truncated.")
    return probe_header(spooled.path, fmt, spooled.size, settings.limits)


def _public(manifest: Manifest, settings: Settings) -> dict[str, object]:
    return manifest.public_view(settings.edge_base_url, settings.status_base_url)


async def upload(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    store = request.app[STORE_KEY]
    queue = request.app[QUEUE_KEY]
    require_token(request, settings.auth)
    request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
    limits = settings.limits
    if request.content_length is not None and request.content_length > limits.max_upload_bytes:
        _count(PayloadTooLarge.code, 0)
        raise PayloadTooLarge(f"The upload exceeds the limit of {limits.max_upload_bytes} bytes.")
    spool = Spool()
    size = 0
    try:
        try:
            async with asyncio.timeout(limits.request_timeout_seconds):
                spooled = await spool.write_stream(_body_chunks(request), limits.max_upload_bytes)
        except TimeoutError:
            raise BadRequest("The upload was not received in time.") from None
        size = spooled.size
        source = await asyncio.to_thread(_validate, spooled, settings)
        image_id = image_id_from_digest(spooled.sha256)
        existing = await load_manifest(store, image_id)
        if existing is not None and existing.status is not Status.PENDING:
            _count("duplicate", size)
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
        _count(exc.code, size)
        raise
    finally:
        await spool.close()

    now = time.time()
    manifest = existing or Manifest(
        id=image_id, status=Status.PENDING, source=source, created_at=now, updated_at=now
    )
    # The pending manifest is the durable record of acceptance: written before the
    # job, so a lost message is healed by reconcile, never a lost upload.
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
        await publish_job(queue, settings, job)
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


async def publish_job(queue: JobQueue, settings: Settings, job: TranscodeJob) -> None:
    try:
        await queue.publish(
            settings.kafka.jobs_topic,
            Message(key=job.image_id, value=job.encode(), headers={"request-id": job.request_id}),
        )
    except QueueUnavailable:
        JOBS_PUBLISHED.labels("error").inc()
        raise
    JOBS_PUBLISHED.labels("ok").inc()


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


def ingest_routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/images", upload),
        web.get("/v1/images/{image_id}", get_status),
    ]


def configure_ingest(
    app: web.Application, settings: Settings, store: BlobStore, queue: JobQueue
) -> None:
    app[SETTINGS_KEY] = settings
    app[STORE_KEY] = store
    app[QUEUE_KEY] = queue
    app.add_routes(ingest_routes())
