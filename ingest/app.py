"""The ingest HTTP app: ``POST /v1/images``, ``GET`` and ``DELETE /v1/images/{id}``,
and, with a record store, the record API (``ingest.records``).

An upload passes, in order: the header checks (token, declared length, shape,
a free slot: ``ingest.admission``), the streamed body (size and time limits,
type sniffed from the first bytes: ``ingest.body``, ``ingest.spool``), then the
file checks (``ingest.validate``). Only then is anything stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ingest.accept import Admitted, check_spooled, enqueue_admitted, store_original
from ingest.admission import (
    RATE_HEADERS,
    URL_JSON,
    UploadSlots,
    admit,
    expect_continue,
    limit_upload,
    token_subject,
)
from ingest.auth import require_token
from ingest.body import body_chunks
from ingest.delete import LocalPurge, delete_image
from ingest.event_log import list_events
from ingest.fetch import Fetch, parse_url
from ingest.quota import (
    DECLARED,
    QUOTAS_KEY,
    RECEIVED,
    OwnerQuotas,
    check_declared,
    configure_quotas,
    quotas_of,
)
from ingest.record_limits import limit_record_write, limited_writes
from ingest.records import (
    AliasMoved,
    RecordRoutes,
    RecordSpec,
    manifest_view,
    private_manifest_view,
    record_spec,
    record_view,
    require_signing,
)
from ingest.spool import Spool, Spooled
from ingest.sweep import Sweeper, attach_record
from ingest.upload_urls import (
    UPLOAD_PATH,
    Claim,
    Claims,
    claim_sweeper_ctx,
    claims_from_request,
    cors_headers,
    enabled,
    json_object,
    preflight,
    sign,
    upload_url_view,
    verify,
)
from ingest.validate import check_type
from metrics.definitions import (
    IMAGE_DELETES,
    UPLOAD_BYTES,
    UPLOAD_URL_USES,
    UPLOAD_URLS_CREATED,
    UPLOADS,
    URL_FETCHES,
)
from pinhole import cache_policy
from pinhole.domain.ids import ImageId, InvalidImageId, parse_image_id
from pinhole.domain.keys import status_url
from pinhole.domain.manifest import Focal, Manifest
from pinhole.domain.record import Record, validate_alias, validate_owner
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
from pinhole.ports import BlobStore, HotCache, JobQueue, RecordStore
from pinhole.rate_limits import UPLOAD_URLS, gate_of
from pinhole.settings import Settings
from pinhole.web import pinhole_error_response, response_for_exception

log = logging.getLogger("pinhole.ingest")

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", BlobStore)
QUEUE_KEY = web.AppKey("queue", JobQueue)
CACHE_KEY = web.AppKey("cache", HotCache)
SLOTS_KEY = web.AppKey("upload_slots", UploadSlots)
LOCAL_PURGE_KEY: web.AppKey[LocalPurge] = web.AppKey("local_purge")
RECORDS_KEY = web.AppKey("records", RecordStore)
RECORD_ROUTES_KEY = web.AppKey("record_routes", RecordRoutes)
SWEEPER_KEY = web.AppKey("record_sweeper", Sweeper)


def _public(manifest: Manifest, settings: Settings, *, private: bool = False) -> dict[str, object]:
    return manifest_view(manifest, settings, private=private)


Chunks = AsyncIterator[bytes]


@dataclass
class Intake:
    """Where an upload's bytes come from and what they are held to. Every way in
    (a body, an upload URL, a fetched URL) then takes the same steps in ``_accept``.

    ``source`` is ``None`` for the request's body (raw or multipart); otherwise
    it opens the chunks of a fetched image. ``claim`` is an upload URL's one use,
    taken once the file has passed its checks and given back if the upload then
    fails. ``extra`` goes into the answer."""

    max_bytes: int
    check_head: Callable[[bytes], object] = check_type
    source: Callable[[], AbstractAsyncContextManager[Chunks]] | None = None
    claim: Claim | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def upload(request: web.Request) -> web.Response:
    return await _upload(request, alias=None)


async def upload_to_alias(request: web.Request) -> web.Response:
    """``PUT /v1/owners/{owner}/aliases/{alias}``: a JSON body points the alias at
    a record; an image body is a new upload whose record takes the alias."""
    if request.content_type == "application/json":
        settings = request.app[SETTINGS_KEY]
        require_token(request, settings.auth)
        limited = await limit_record_write(request, settings)
        response: web.Response = await request.app[RECORD_ROUTES_KEY].point_alias(request)
        response.headers.update(limited)
        return response
    return await _upload(request, alias=request.match_info["alias"])


async def _upload(request: web.Request, *, alias: str | None) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    slots = request.app[SLOTS_KEY]
    request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
    try:
        if alias is not None:
            require_token(request, settings.auth)
        admit(request, settings, slots)
        query = {
            k: request.query[k]
            for k in ("owner", "alias", "metadata", "private")
            if k in request.query
        }
        focal = _focal(request.query.get("focal"))
        if request.content_type == URL_JSON and alias is None:
            if query:
                raise BadRequest("Give the record's fields in the JSON body, not the query.")
            spec, intake = await _url_intake(request, settings)
        else:
            if alias is not None:
                query["owner"] = request.match_info["owner"]
            # A raw body's record comes from the query, checked before the body is read.
            spec = record_spec(query, alias=alias) if query else None
            intake = Intake(settings.limits.max_upload_bytes)
        await limit_upload(request, settings, owner=spec.owner if spec is not None else None)
        await check_declared(request, spec.owner if spec is not None else None)
    except PinholeError as exc:
        _count(exc.code, 0)
        raise
    with slots.claim():
        response = await _accept(request, settings, request_id, spec, alias, intake, focal)
    response.headers.update(request.get(RATE_HEADERS, {}))
    return response


_URL_FIELDS = frozenset({"url", "owner", "alias", "metadata", "private"})


async def _url_intake(request: web.Request, settings: Settings) -> tuple[RecordSpec | None, Intake]:
    """Upload by URL: ``{"url", "owner"?, "alias"?, "metadata"?, "private"?}``. The URL and
    the record are checked before anything is fetched."""
    body = await json_object(request)
    unknown = set(body) - _URL_FIELDS
    if unknown:
        raise BadRequest(f"Unknown fields {sorted(unknown)}; known: {sorted(_URL_FIELDS)}.")
    values: dict[str, str] = {}
    for name, check in (("owner", validate_owner), ("alias", validate_alias)):
        value = body.get(name)
        if value is not None:
            values[name] = check(value)  # a number or a list is refused, not turned to text
    if body.get("metadata") is not None:
        values["metadata"] = json.dumps(body["metadata"])
    if body.get("private") is not None:
        if not isinstance(body["private"], bool):
            raise BadRequest("private is true or false.")
        values["private"] = "true" if body["private"] else "false"
    spec = record_spec(values) if values else None
    limit = settings.limits.max_upload_bytes
    try:
        url = parse_url(body.get("url"), settings.url_fetch)
    except PinholeError as exc:
        URL_FETCHES.labels(exc.code).inc()
        raise
    fetch = Fetch(settings.url_fetch, limit)
    return spec, Intake(limit, source=lambda: fetch.body(url))


async def _spool_intake(
    request: web.Request, spool: Spool, intake: Intake, fields: dict[str, str]
) -> Spooled:
    if intake.source is None:
        chunks = body_chunks(request, request.app[SETTINGS_KEY].limits, fields)
        return await spool.write_stream(chunks, intake.max_bytes, intake.check_head)
    async with intake.source() as fetched:
        return await spool.write_stream(fetched, intake.max_bytes, intake.check_head)


async def _accept(
    request: web.Request,
    settings: Settings,
    request_id: str,
    spec: RecordSpec | None,
    alias: str | None,
    intake: Intake,
    focal: Focal | None = None,
) -> web.Response:
    store = request.app[STORE_KEY]
    limits = settings.limits
    spool = Spool()
    fields: dict[str, str] = {}
    try:
        try:
            try:
                async with asyncio.timeout(limits.request_timeout_seconds):
                    spooled = await _spool_intake(request, spool, intake, fields)
            except TimeoutError:
                raise RequestTimeout(
                    f"The upload took over {limits.request_timeout_seconds:g} seconds."
                ) from None
            if "focal" in fields:  # the image's, not the record's
                if focal is not None:
                    raise BadRequest("Give the focal point in the query or the form, not both.")
                focal = _focal(fields.pop("focal"))
            if fields:
                if intake.claim is not None:
                    raise BadRequest("An upload URL's record is set by the URL, not the form.")
                if spec is not None and alias is None:
                    raise BadRequest("Give the record's fields in the query or the form, not both.")
                if alias is not None:
                    fields["owner"] = request.match_info["owner"]
                spec = record_spec(fields, alias=alias)
                # The owner of a multipart upload is known only now: counted before
                # anything is stored.
                if spec is not None:
                    await limit_upload(request, settings, owner=spec.owner)
            if spec is not None and spec.private:
                require_signing(settings)  # before anything is stored
            records = request.app.get(RECORDS_KEY)
            if spec is not None and records is None:
                raise BadRequest("This server keeps no records: upload without an owner.")
            quotas = quotas_of(request)
            if spec is not None and quotas is not None:
                # The real size, before anything is stored: a client that
                # declared less (or nothing) is held here (ingest.quota).
                await quotas.check(spec.owner, spool.received, RECEIVED)
            admitted = await check_spooled(store, spooled, limits)
            if intake.claim is not None:
                await intake.claim.take()  # after the file checks: a refused file uses nothing
            if not admitted.duplicate:
                await store_original(store, spooled, admitted)
            if admitted.existing is not None and admitted.duplicate:
                _count("duplicate", spool.received)
                return await _answer(
                    request,
                    settings,
                    request_id,
                    admitted.existing,
                    spec,
                    spooled,
                    admitted,
                    200,
                    intake.extra,
                )
        except PinholeError as exc:
            _count(exc.code, spool.received)
            raise
        except TransientError:
            _count(ServiceUnavailable.code, spool.received)
            raise
        size = spool.received

        try:
            manifest = await enqueue_admitted(
                store, request.app[QUEUE_KEY], settings.kafka, admitted, request_id, focal
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
        return await _answer(
            request, settings, request_id, manifest, spec, spooled, admitted, 202, intake.extra
        )
    except Exception:
        if intake.claim is not None:  # not used up: the URL may be retried
            await intake.claim.give_back()
        raise
    finally:
        await spool.close()


def _focal(text: str | None) -> Focal | None:
    """An upload's focal point, ``x,y`` in 0..1 (``focal`` in the query or the form)."""
    if text is None:
        return None
    try:
        return Focal.parse(text)
    except ValueError:
        raise BadRequest("focal is x,y with each between 0 and 1, e.g. focal=0.5,0.3.") from None


async def _answer(
    request: web.Request,
    settings: Settings,
    request_id: str,
    manifest: Manifest,
    spec: RecordSpec | None,
    spooled: Spooled,
    admitted: Admitted,
    status: int,
    extra: dict[str, Any],
) -> web.Response:
    """The upload's answer, after its record (when it asked for one) is written:
    an upload that gets its 2xx has its record."""
    body = _public(manifest, settings)
    body.update(extra)
    if spec is not None:
        record, restored = await _record(request, settings, request_id, spec, spooled, admitted)
        shown = manifest
        if restored:  # the image had just been swept: it is pending again
            status = 202
            restored_manifest = await load_manifest(request.app[STORE_KEY], admitted.image_id)
            if restored_manifest is not None:
                body = _public(shown := restored_manifest, settings)
        if record.private:
            # The uploader's URLs work whatever the other records of the bytes are.
            body.update(_public(shown, settings, private=True))
        body["record"] = record_view(record, settings)
    headers = {"X-Request-ID": request_id}
    if status == 202:
        headers["Location"] = status_url(settings.status_base_url, admitted.image_id)
        headers["Cache-Control"] = cache_policy.ERROR
    else:
        headers["Cache-Control"] = cache_policy.MANIFEST
    return web.json_response(body, status=status, headers=headers)


async def _record(
    request: web.Request,
    settings: Settings,
    request_id: str,
    spec: RecordSpec,
    spooled: Spooled,
    admitted: Admitted,
) -> tuple[Record, bool]:
    store = request.app[STORE_KEY]
    records = request.app[RECORDS_KEY]

    async def restore() -> None:
        fresh = Admitted(admitted.image_id, admitted.source, admitted.size, None)
        await store_original(store, spooled, fresh)
        await enqueue_admitted(store, request.app[QUEUE_KEY], settings.kafka, fresh, request_id)

    moved = request.app[RECORD_ROUTES_KEY].moved
    quotas = request.app[QUOTAS_KEY]
    make = functools.partial(spec.create, records, admitted.image_id, moved)
    return await attach_record(
        store,
        lambda: quotas.create(make, spec.owner, admitted.image_id, admitted.size),
        admitted.image_id,
        restore,
    )


async def create_upload_url(request: web.Request) -> web.Response:
    """``POST /v1/upload-urls`` (bearer token): a signed one-time upload URL."""
    settings = request.app[SETTINGS_KEY]
    try:
        require_token(request, settings.auth)
        keys = enabled(settings.upload_urls)
        if RECORDS_KEY not in request.app:
            raise BadRequest("This server keeps no records, and an upload URL makes one.")
        claims = claims_from_request(await json_object(request), settings)
        gate = gate_of(request)
        limited = (
            await gate.check(
                UPLOAD_URLS,
                token=token_subject(request, settings.auth),
                owner=claims.owner,
            )
            if gate is not None
            else {}
        )
        # An owner with no room left gets no upload URL (at least one byte, one image).
        await request.app[QUOTAS_KEY].check(claims.owner, 1, DECLARED)
    except PinholeError as exc:
        UPLOAD_URLS_CREATED.labels(exc.code).inc()
        raise
    UPLOAD_URLS_CREATED.labels("created").inc()
    return web.json_response(
        upload_url_view(claims, sign(claims, keys[0]), settings),
        status=201,
        headers={"Cache-Control": cache_policy.ERROR, **limited},
    )


async def upload_with_url(request: web.Request) -> web.Response:
    """``POST /v1/uploads/{token}``: an upload whose only credential is its URL.
    Every answer, errors included, carries the CORS headers of a configured origin."""
    settings = request.app[SETTINGS_KEY]
    cors: dict[str, str] = {}
    try:
        cors = cors_headers(request, settings.upload_urls)
        claims = verify(request.match_info["token"], enabled(settings.upload_urls))
        response = await _upload_claimed(request, settings, claims)
    except Exception as exc:
        UPLOAD_URL_USES.labels(
            exc.code if isinstance(exc, PinholeError) else ServiceUnavailable.code
        ).inc()
        response = response_for_exception(request, exc)
    else:
        UPLOAD_URL_USES.labels("accepted" if response.status == 202 else "duplicate").inc()
    response.headers.update(cors)
    return response


async def _upload_claimed(request: web.Request, settings: Settings, claims: Claims) -> web.Response:
    slots = request.app[SLOTS_KEY]
    request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
    try:
        if RECORDS_KEY not in request.app:
            raise BadRequest("This server keeps no records, and an upload URL makes one.")
        admit(request, settings, slots, needs_token=False, max_bytes=claims.max_bytes)
        await limit_upload(request, settings, needs_token=False, owner=claims.owner)
        await check_declared(request, claims.owner)
    except PinholeError as exc:
        _count(exc.code, 0)
        raise
    intake = Intake(
        claims.max_bytes,
        check_head=claims.check_head,
        claim=Claim(request.app[STORE_KEY], claims),
        extra={"upload_id": claims.upload_id},
    )
    spec = RecordSpec(claims.owner, metadata=claims.metadata, private=claims.private)
    with slots.claim():
        response = await _accept(request, settings, request_id, spec, None, intake)
    response.headers.update(request.get(RATE_HEADERS, {}))
    return response


async def _expect_with_url(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` on an upload URL: the URL and its limits first."""
    settings = request.app[SETTINGS_KEY]
    try:
        cors = cors_headers(request, settings.upload_urls)
        claims = verify(request.match_info["token"], enabled(settings.upload_urls))
    except PinholeError as exc:
        UPLOAD_URL_USES.labels(exc.code).inc()
        return pinhole_error_response(exc)
    answer = await expect_continue(
        request,
        settings,
        request.app[SLOTS_KEY],
        needs_token=False,
        max_bytes=claims.max_bytes,
        owner=claims.owner,
    )
    if answer is not None:
        answer.headers.update(cors)
    return answer


async def _preflight(request: web.Request) -> web.Response:
    return await preflight(request, request.app[SETTINGS_KEY].upload_urls)


def upload_url_routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/upload-urls", create_upload_url),
        web.post(UPLOAD_PATH, upload_with_url, expect_handler=_expect_with_url),
        web.options(UPLOAD_PATH, _preflight),
    ]


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
    # A private image's URLs are signed and expire, for a caller with the token
    # only: this route needs none (ingest.records.private_manifest_view).
    body = await private_manifest_view(request, manifest, settings, request.app.get(RECORDS_KEY))
    return web.json_response(body, headers={"Cache-Control": cache_policy.MANIFEST})


async def delete(request: web.Request) -> web.Response:
    """Remove the image everywhere: 204, or 404 if there is no such image."""
    settings = request.app[SETTINGS_KEY]
    try:
        require_token(request, settings.auth)
        image_id = _image_id(request)
        records = request.app.get(RECORDS_KEY)
        if records is not None:
            await _delete_records_of(records, image_id, request.app[RECORD_ROUTES_KEY].moved)
        found = await _delete_image(request.app, image_id)
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


async def _delete_records_of(records: RecordStore, image_id: ImageId, moved: AliasMoved) -> None:
    """The content-level takedown removes every owner's record of the image first."""
    while batch := await records.list_by_image(image_id):
        for record in batch:
            await records.delete(record.id)
        await moved([(r.owner, r.alias) for r in batch if r.alias is not None])


async def _delete_image(app: web.Application, image_id: ImageId) -> bool:
    settings = app[SETTINGS_KEY]
    return await delete_image(
        image_id,
        store=app[STORE_KEY],
        cache=app.get(CACHE_KEY),
        queue=app[QUEUE_KEY],
        kafka=settings.kafka,
        local_purge=app.get(LOCAL_PURGE_KEY),
    )


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _with_token(settings: Settings, handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.Response:
        require_token(request, settings.auth)
        return await handler(request)

    return guarded


def record_routes(
    settings: Settings, slots: UploadSlots, routes: RecordRoutes, quotas: OwnerQuotas
) -> list[web.RouteDef]:
    def guard(handler: Handler) -> Handler:
        return _with_token(settings, handler)

    def write(handler: Handler) -> Handler:  # a record write: rate limited (ingest.record_limits)
        return guard(limited_writes(settings, routes.records, handler))

    alias = "/v1/owners/{owner}/aliases/{alias}"
    expect = functools.partial(expect_continue, settings=settings, slots=slots)
    return [
        web.get("/v1/owners/{owner}/images", guard(routes.list_owner)),
        web.get("/v1/owners/{owner}/usage", guard(quotas.usage_view)),
        web.delete("/v1/owners/{owner}", write(routes.delete_owner)),
        web.post("/v1/records", write(routes.create)),
        web.get("/v1/records/{record_id}", guard(routes.get)),
        web.patch("/v1/records/{record_id}", write(routes.patch)),
        web.delete("/v1/records/{record_id}", write(routes.delete)),
        web.get(alias, guard(routes.get_alias)),
        web.put(alias, upload_to_alias, expect_handler=expect),
        web.delete(alias, write(routes.delete_alias)),
    ]


def _sweeper_ctx(sweeper: Sweeper) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sweeper.run(), name="record-sweep")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


def ingest_routes(settings: Settings, slots: UploadSlots) -> list[web.RouteDef]:
    expect = functools.partial(expect_continue, settings=settings, slots=slots)
    return [
        web.post("/v1/images", upload, expect_handler=expect),
        web.get("/v1/images/{image_id}", get_status),
        web.delete("/v1/images/{image_id}", delete),
        web.get("/v1/events", _with_token(settings, events)),
    ]


async def events(request: web.Request) -> web.Response:
    """``GET /v1/events?after=&limit=``: the events topic, paged (ingest.event_log)."""
    settings = request.app[SETTINGS_KEY]
    return await list_events(request, request.app[QUEUE_KEY], settings.kafka.events_topic)


def configure_ingest(
    app: web.Application,
    settings: Settings,
    store: BlobStore,
    queue: JobQueue,
    *,
    cache: HotCache | None = None,
    local_purge: LocalPurge | None = None,
    records: RecordStore | None = None,
) -> None:
    """``cache`` is the shared hot cache a delete purges; ``local_purge`` drops
    entries from an in-process cache (the edge L1 when ``pinhole up`` runs both);
    ``records`` turns on the record API and the sweep of unreferenced images
    (the caller opens and closes it)."""
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
    app.add_routes(upload_url_routes())
    if settings.upload_urls.signing_keys:
        app.cleanup_ctx.append(
            claim_sweeper_ctx(store, settings.upload_urls.claim_sweep_interval_seconds)
        )
    if records is not None:
        app[RECORDS_KEY] = records
        routes = RecordRoutes(
            settings, store, records, AliasMoved(queue, settings.kafka.events_topic)
        )
        app[RECORD_ROUTES_KEY] = routes
        quotas = configure_quotas(app, settings, records, store)
        app.add_routes(record_routes(settings, slots, routes, quotas))
        sweeper = Sweeper(
            store,
            records,
            lambda image_id: _delete_image(app, image_id),
            grace_seconds=settings.record_api.sweep_grace_seconds,
            interval_seconds=settings.record_api.sweep_interval_seconds,
        )
        app[SWEEPER_KEY] = sweeper
        app.cleanup_ctx.append(_sweeper_ctx(sweeper))
