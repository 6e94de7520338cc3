"""Storage quotas per owner (``Settings.quotas``), and ``GET /v1/owners/{owner}/usage``.

The record store is the one truth every ingest process shares: an owner's usage
is a sum over its records (``pinhole.domain.quota``), and the record that makes
an upload count is created only if it fits, in the same transaction that checks
(``SqlRecordStore.create``). An upload is held to its owner's quota three times:

1. ``declared``: from the headers, before a byte of the body is read (the
   ``Expect: 100-continue`` answer included): one more image, and the declared
   ``Content-Length`` of a raw body, must fit what the owner holds now.
2. ``received``: once the body is spooled (not yet stored), its real size; a
   client that declared less, or sent a chunked or multipart body, is held here.
3. ``commit``: when the record is created, atomically, against every committed
   record: uploads of one owner racing from several processes cannot together
   go over. An upload refused here has had its original stored (a fresh image)
   and is marked for the sweep, which deletes it unless another record names it.

Each refusal is ``403 quota-exceeded`` and counted in
``pinhole_quota_refusals_total{quota, stage}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ingest.sweep import mark_for_sweep
from metrics.definitions import QUOTA_REFUSALS
from pinhole import cache_policy
from pinhole.domain.ids import ImageId
from pinhole.domain.quota import Quota, exceeded
from pinhole.domain.record import Record, validate_owner
from pinhole.errors import QuotaExceeded
from pinhole.ports import BlobStore, RecordStore
from pinhole.settings import Quotas, Settings

DECLARED, RECEIVED, COMMIT = "declared", "received", "commit"
STAGES = (DECLARED, RECEIVED, COMMIT)
KINDS = ("bytes", "images")

for _kind in KINDS:  # every series exists from the start, at 0
    for _stage in STAGES:
        QUOTA_REFUSALS.labels(_kind, _stage)


def owner_quota(quotas: Quotas, owner: str) -> Quota:
    configured = quotas.for_owner(owner)
    return Quota(max_bytes=configured.max_bytes, max_images=configured.max_images)


def _refused(exc: QuotaExceeded, stage: str) -> QuotaExceeded:
    QUOTA_REFUSALS.labels(exc.kind, stage).inc()
    return exc


class OwnerQuotas:
    """The quotas of ``settings`` over the shared ``records``."""

    def __init__(self, quotas: Quotas, records: RecordStore, store: BlobStore) -> None:
        self.quotas = quotas
        self.records = records
        self.store = store

    def quota(self, owner: str) -> Quota:
        return owner_quota(self.quotas, owner)

    async def check(self, owner: str, size: int, stage: str) -> None:
        """``QuotaExceeded`` unless one more image of ``size`` bytes fits what
        ``owner`` holds now. No store read for an owner without a quota."""
        quota = self.quota(owner)
        if quota.unlimited:
            return
        usage = await self.records.usage(owner)
        kind = quota.refusal(usage, images=1, size=size)
        if kind is not None:
            raise _refused(exceeded(owner, kind, quota, usage), stage)

    async def create(
        self,
        make: Callable[..., Awaitable[Record]],
        owner: str,
        image_id: ImageId,
        size: int,
    ) -> Record:
        """``make(size_bytes=, quota=)`` (a ``RecordSpec.create`` bound to its
        image): the record, or ``QuotaExceeded`` with the image marked for the
        sweep (its original may just have been stored for this upload alone)."""
        try:
            record = await make(size_bytes=size, quota=self.quota(owner))
        except QuotaExceeded as exc:
            await mark_for_sweep(self.store, [image_id])
            raise _refused(exc, COMMIT) from None
        return record

    async def usage_view(self, request: web.Request) -> web.Response:
        """``GET /v1/owners/{owner}/usage``: what the owner holds against its quota.
        ``null`` for a limit that is not set; ``remaining`` never below 0."""
        owner = validate_owner(request.match_info["owner"])
        quota = self.quota(owner)
        usage = await self.records.usage(owner)

        def left(limit: int | None, used: int) -> int | None:
            return None if limit is None else max(0, limit - used)

        return web.json_response(
            {
                "owner": owner,
                "usage": {"bytes": usage.bytes, "images": usage.images},
                "quota": {"max_bytes": quota.max_bytes, "max_images": quota.max_images},
                "remaining": {
                    "bytes": left(quota.max_bytes, usage.bytes),
                    "images": left(quota.max_images, usage.images),
                },
            },
            headers={"Cache-Control": cache_policy.API},
        )


async def create_within_quota(
    records: RecordStore,
    quotas: Quotas,
    owner: str,
    image_id: ImageId,
    size: int,
    *,
    metadata: Any = None,
    alias: Any = None,
    private: bool = False,
) -> Record:
    """A record of an image already stored (``POST /v1/records``), held to its
    owner's quota at ``commit``: nothing was stored for it, so nothing to sweep."""
    try:
        return await records.create(
            owner,
            image_id,
            metadata=metadata,
            alias=alias,
            private=private,
            size_bytes=size,
            quota=owner_quota(quotas, owner),
        )
    except QuotaExceeded as exc:
        raise _refused(exc, COMMIT) from None


QUOTAS_KEY = web.AppKey("owner_quotas", OwnerQuotas)


def quotas_of(request: web.Request) -> OwnerQuotas | None:
    """The app's quotas; ``None`` where it keeps no records."""
    return request.app.get(QUOTAS_KEY)


def declared_size(request: web.Request) -> int:
    """The bytes a raw image body declares it has (0 when it does not say, or
    is multipart: a form's length is not its file's, so it is held at ``received``)."""
    length = request.content_length
    if length is None or not request.content_type.startswith(("image/", "application/octet")):
        return 0
    return length


# Set once a request passed stage 1: the expect handler and the route's handler
# both call ``check_declared``, and one usage read is enough.
_DECLARED_CHECKED = web.RequestKey("pinhole.quota_declared_checked", str)


async def check_declared(request: web.Request, owner: str | None) -> None:
    """Stage 1 for an upload whose owner is known from its headers."""
    quotas = quotas_of(request)
    if quotas is None or owner is None or request.get(_DECLARED_CHECKED) == owner:
        return
    await quotas.check(owner, declared_size(request), DECLARED)
    request[_DECLARED_CHECKED] = owner


def configure_quotas(
    app: web.Application, settings: Settings, records: RecordStore, store: BlobStore
) -> OwnerQuotas:
    quotas = OwnerQuotas(settings.quotas, records, store)
    app[QUOTAS_KEY] = quotas
    return quotas
