"""The record API: owners' uses of images, with metadata and aliases.

An image is content (its id is its bytes' hash); a record is one owner's use of
it. Uploads with an ``owner`` make a record beside the image; these routes list,
read, change and delete records. Every route needs the bearer token.

- ``GET /v1/owners/{owner}/images?limit=&cursor=``: newest first, one shard.
- ``POST /v1/records``: a record for an image already stored (a backfill of
  images uploaded before records existed, or a second owner of the same image).
- ``GET|PATCH|DELETE /v1/records/{record_id}``.
- ``GET|PUT|DELETE /v1/owners/{owner}/aliases/{alias}``: ``PUT`` points the
  alias at a record of the owner (``{"record_id": ...}``) or at a new upload
  (an image body, as ``POST /v1/images`` takes).
- ``DELETE /v1/owners/{owner}``: every record of the owner, in batches within a
  time budget per request; the answer says how many went and whether any are
  left (call again until ``more`` is false).

A record can be private (``"private": true`` at create, an upload's
``private=true``, or by ``PATCH``). An image every record of which is private
is served by the edge only for a valid, expiring signature (``server.privacy``),
and these routes hand out such URLs for a private record, and the manifest for a
private image (``Records.private_url_seconds``, rounded: see
``pinhole.domain.signing.expiry_for``). A change that can turn an image private
or public publishes ``image.visibility``: every edge forgets what it knew of the
image, and ``pinhole cdn-purge`` purges its public URLs from the CDN.

Whenever what an alias names changes, ``alias.moved`` is published, so
``pinhole cdn-purge`` purges the alias's stable edge URLs (``server.aliases``)
from the CDN; a lost event leaves the old redirect for its short max-age.

A record's image is deleted when its last record goes, after a grace period
(``ingest.sweep``). ``DELETE /v1/images/{id}`` stays the content-level takedown:
it removes every record of the image, then the image.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ingest.auth import require_token
from ingest.quota import create_within_quota
from ingest.sweep import mark_for_sweep
from pinhole import cache_policy
from pinhole.domain.ids import ImageId, InvalidImageId, parse_image_id
from pinhole.domain.keys import status_url, sweep_key, variant_url
from pinhole.domain.ladder import Format, Preset, current
from pinhole.domain.manifest import Manifest
from pinhole.domain.quota import Quota
from pinhole.domain.record import (
    Record,
    RecordId,
    encode_metadata,
    parse_record_id,
    validate_alias,
    validate_owner,
)
from pinhole.domain.signing import expiry_for, signed_ladder_url
from pinhole.errors import (
    BadRequest,
    InvalidMetadata,
    NotFound,
    QueueUnavailable,
    RecordStoreUnavailable,
    TransientError,
    Unauthorized,
)
from pinhole.events import IMAGE_VISIBILITY, alias_message, event_message
from pinhole.manifests import load_manifest
from pinhole.ports import BlobStore, JobQueue, RecordStore
from pinhole.settings import Settings

log = logging.getLogger("pinhole.ingest")

_JSON_HEADERS = {"Cache-Control": cache_policy.API}


@dataclass(frozen=True)
class RecordSpec:
    """What an upload asks for its record: ``owner`` and, optionally, an alias
    (``move``: take it from another record of the owner) and metadata."""

    owner: str
    alias: str | None = None
    metadata: dict[str, Any] | None = None
    move: bool = False
    private: bool = False

    async def create(
        self,
        records: RecordStore,
        image_id: ImageId,
        moved: AliasMoved | None = None,
        *,
        size_bytes: int = 0,
        quota: Quota | None = None,
    ) -> Record:
        """``size_bytes`` and ``quota``: the owner's storage quota (``ingest.quota``)."""
        if self.alias is None or not self.move:
            record = await records.create(
                self.owner,
                image_id,
                metadata=self.metadata,
                alias=self.alias,
                private=self.private,
                size_bytes=size_bytes,
                quota=quota,
            )
        else:
            record = await records.create(
                self.owner,
                image_id,
                metadata=self.metadata,
                private=self.private,
                size_bytes=size_bytes,
                quota=quota,
            )
            record = await records.set_alias(record.id, self.alias, move=True)
            if moved is not None:
                await moved([(self.owner, self.alias)])
        if moved is not None:
            # No sweep marker check here: an upload during an image's sweep grace
            # period re-attaches it (ingest.sweep), and an edge that held it
            # private for its marker serves it again within the visibility TTL.
            await moved.created(records, record)
        return record


def _private_flag(raw: str | None) -> bool:
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise BadRequest("private is true or false.")


def require_signing(settings: Settings) -> None:
    """A private record's URLs are signed with the edge's keys: none, no private records."""
    if not settings.edge.signing_keys:
        raise BadRequest("Private records need signed URLs: this server has no edge.signing_keys.")


def private_link(settings: Settings, now: float) -> Callable[[Preset, ImageId, Format | None], str]:
    """The expiring signed ladder URL of a private image, good for
    ``Records.private_url_seconds`` from ``now`` (pinhole.domain.signing)."""
    key = settings.edge.signing_keys[0]
    expires = expiry_for(now, settings.record_api.private_url_seconds)

    def link(preset: Preset, image_id: ImageId, fmt: Format | None) -> str:
        return signed_ladder_url(settings.edge_base_url, key, preset, image_id, fmt, expires)

    return link


async def image_is_private(records: RecordStore | None, image_id: ImageId) -> bool:
    """Some record private, none public: the edge's rule (``server.privacy``),
    but for an image no record names any more, which the edge also holds private
    while it waits for the sweep; its manifest keeps the unsigned URLs."""
    if records is None:
        return False
    public, private = await records.count_by_image_visibility(image_id)
    return private > 0 and public == 0


async def private_manifest_view(
    request: web.Request, manifest: Manifest, settings: Settings, records: RecordStore | None
) -> dict[str, Any]:
    """``GET /v1/images/{id}``, which needs no token (status polling): a private
    image's view says ``"private": true``, and its URLs are signed only for a
    caller with a valid bearer token; anyone else gets the unsigned URLs, which
    the edge refuses (they follow from the id, so they give nothing away). The
    record store down: the unsigned view, as for a public image."""
    try:
        private = await image_is_private(records, manifest.id)
    except RecordStoreUnavailable as exc:
        log.warning("manifest without the image's visibility", extra={"error": str(exc)})
        private = False
    trusted = False
    if private:
        try:
            require_token(request, settings.auth)
            trusted = True
        except Unauthorized:
            pass
    view = manifest_view(manifest, settings, private=trusted)
    if private:
        view["private"] = True
    return view


def manifest_view(manifest: Manifest, settings: Settings, *, private: bool) -> dict[str, Any]:
    """The manifest as clients get it; a private image's URLs signed and expiring."""
    link = private_link(settings, time.time()) if private and settings.edge.signing_keys else None
    return manifest.public_view(settings.edge_base_url, settings.status_base_url, link=link)


def _metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidMetadata("metadata must be a JSON object (it is not JSON).") from None
    encode_metadata(value)  # the same checks the store makes, before any byte is stored
    assert isinstance(value, dict)
    return value


def record_spec(values: dict[str, str], *, alias: str | None = None) -> RecordSpec | None:
    """The record an upload asks for, from its query parameters or multipart
    fields; ``None`` without an ``owner``. Checked before anything is stored."""
    owner = values.get("owner")
    given_alias = values.get("alias") if alias is None else alias
    metadata = values.get("metadata")
    private = values.get("private")
    if owner is None:
        if given_alias is not None or metadata is not None or private is not None:
            raise BadRequest("alias, metadata and private belong to a record: give an owner too.")
        return None
    return RecordSpec(
        validate_owner(owner),
        validate_alias(given_alias) if given_alias is not None else None,
        _metadata(metadata),
        move=alias is not None,
        private=_private_flag(private),
    )


def record_view(record: Record, settings: Settings, *, now: float | None = None) -> dict[str, Any]:
    """A record as the API shows it, with its image's status URL and the
    negotiated URL of every preset (built from the id alone: no manifest read).
    A private record's URLs are signed and expire (``private_link``), whether or
    not another owner's public record makes the image public: the owner asked."""
    view = record.to_json()
    if record.private and settings.edge.signing_keys:
        link = private_link(settings, time.time() if now is None else now)
        urls = {p.name: link(p, record.image_id, None) for p in current()}
        view["urls_expire_at"] = expiry_for(
            time.time() if now is None else now, settings.record_api.private_url_seconds
        )
    else:
        urls = {
            p.name: variant_url(settings.edge_base_url, p, record.image_id, None) for p in current()
        }
    view["image"] = {
        "status_url": status_url(settings.status_base_url, record.image_id),
        "urls": urls,
    }
    return view


def _record_id(request: web.Request) -> RecordId:
    return parse_record_id(request.match_info["record_id"])


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise BadRequest("Send a JSON object (Content-Type: application/json).")
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("The body is not JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    return body


def _limit(request: web.Request, settings: Settings) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return settings.record_api.page_size
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BadRequest("limit is a whole number from 1 to 1000.")
    return int(raw)


class AliasMoved:
    """Publishes ``alias.moved`` for (owner, alias or ``None`` for every alias of
    the owner). Best effort: the change is made, and a broker that is down only
    leaves the CDN's old redirect until its max-age. Also ``image.visibility``
    (``visibility``)."""

    def __init__(self, queue: JobQueue, topic: str) -> None:
        self.queue = queue
        self.topic = topic

    async def __call__(self, moved: Iterable[tuple[str, str | None]]) -> None:
        for owner, alias in set(moved):
            try:
                await self.queue.publish(self.topic, alias_message(owner, alias))
            except QueueUnavailable as exc:
                log.warning(
                    "could not publish alias.moved; the CDN keeps the old redirect "
                    "until its max-age",
                    extra={"owner": owner, "alias": alias, "error": str(exc)},
                )

    async def visibility(self, image_id: ImageId, *, strict: bool = True) -> None:
        """``image.visibility`` for an image that may have turned private or
        public. ``strict``: a broker that is down fails the request (503), so the
        client's retry publishes it; otherwise it is logged, and the edges honour
        the change within ``Edge.visibility_ttl_seconds`` while the CDN keeps
        what it holds."""
        try:
            await self.queue.publish(self.topic, event_message(IMAGE_VISIBILITY, image_id))
        except QueueUnavailable as exc:
            if strict:
                raise
            log.warning(
                "could not publish image.visibility; edges honour the change within "
                "their visibility TTL, the CDN keeps what it holds",
                extra={"id": image_id, "error": str(exc)},
            )

    async def created(
        self, records: RecordStore, record: Record, store: BlobStore | None = None
    ) -> None:
        """After a record is made: ``image.visibility`` if it can have changed the
        image, that is for a private record (the image may have had no record, so
        been public), or for the first public record of an image with private
        ones or waiting for the sweep (``store``: its marker is looked for; the
        edge holds such an image private, ``server.privacy``). Best effort: a
        create is not idempotent, so it is not failed for this; a lost event
        leaves the old visibility at the edges for at most
        ``Edge.visibility_ttl_seconds``, and a public copy in the CDN until
        purged (README, "Private records")."""
        if not record.private:
            try:
                public, private = await records.count_by_image_visibility(record.image_id)
                if public != 1:
                    return
                if private == 0 and (
                    store is None or await store.head(sweep_key(record.image_id)) is None
                ):
                    return
            except (RecordStoreUnavailable, TransientError) as exc:
                log.warning(
                    "could not tell whether an image turned public",
                    extra={"id": record.image_id, "error": str(exc)},
                )
                return
        await self.visibility(record.image_id, strict=False)

    async def if_private(self, records: RecordStore, image_ids: Iterable[ImageId]) -> None:
        """After records went (their sweep markers written first): ``image.visibility``
        for each image that no public record names now, so private at the edge
        (its last public record went, or its last record: it waits for the sweep,
        ``server.privacy``). Best effort: the records are gone."""
        for image_id in set(image_ids):
            try:
                public, _ = await records.count_by_image_visibility(image_id)
            except RecordStoreUnavailable as exc:
                log.warning(
                    "could not tell whether an image turned private",
                    extra={"id": image_id, "error": str(exc)},
                )
                continue
            if public == 0:
                await self.visibility(image_id, strict=False)


def _aliases(records: Iterable[Record]) -> list[tuple[str, str | None]]:
    return [(r.owner, r.alias) for r in records if r.alias is not None]


@dataclass
class RecordRoutes:
    """The handlers, bound to what they need (``ingest.app`` builds one)."""

    settings: Settings
    store: BlobStore
    records: RecordStore
    moved: AliasMoved

    def _view(self, record: Record) -> dict[str, Any]:
        return record_view(record, self.settings)

    def _reply(self, body: object, status: int = 200) -> web.Response:
        return web.json_response(body, status=status, headers=_JSON_HEADERS)

    async def list_owner(self, request: web.Request) -> web.Response:
        owner = validate_owner(request.match_info["owner"])
        page = await self.records.list_by_owner(
            owner, limit=_limit(request, self.settings), cursor=request.query.get("cursor")
        )
        return self._reply(
            {
                "owner": owner,
                "records": [self._view(r) for r in page.records],
                "cursor": page.cursor,
            }
        )

    async def create(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        raw = body.get("image_id")
        try:
            image_id = parse_image_id(raw if isinstance(raw, str) else "")
        except InvalidImageId:
            raise BadRequest("image_id is an image id: 32 lowercase hex characters.") from None
        manifest = await load_manifest(self.store, image_id)
        if manifest is None:
            raise NotFound("No image with this id.")
        private = body.get("private", False)
        if not isinstance(private, bool):
            raise BadRequest("private is true or false.")
        if private:
            require_signing(self.settings)
        # The store checks alias and metadata (and the owner's quota) before any write.
        record = await create_within_quota(
            self.records,
            self.settings.quotas,
            validate_owner(body.get("owner")),
            image_id,
            manifest.source.bytes,
            metadata=body.get("metadata"),
            alias=body.get("alias"),
            private=private,
        )
        await self.moved.created(self.records, record, self.store)
        return self._reply(self._view(record), status=201)

    async def get(self, request: web.Request) -> web.Response:
        return self._reply(self._view(await self.records.get(_record_id(request))))

    async def patch(self, request: web.Request) -> web.Response:
        """``metadata`` replaces the metadata; ``alias`` sets the alias (409 if
        another record of the owner has it), ``null`` clears it; ``private``
        (true or false) sets the flag and publishes ``image.visibility``, even if
        unchanged, so a retry after a 503 (the broker down) publishes it."""
        record_id = _record_id(request)
        body = await _json_body(request)
        unknown = set(body) - {"metadata", "alias", "private"}
        if unknown:
            raise BadRequest(f"Only metadata, alias and private can change, not {sorted(unknown)}.")
        if "private" in body:
            if not isinstance(body["private"], bool):
                raise BadRequest("private is true or false.")
            if body["private"]:
                require_signing(self.settings)
        if "metadata" in body and not isinstance(body["metadata"], dict):
            raise InvalidMetadata("metadata must be a JSON object.")
        record = before = await self.records.get(record_id)
        if "metadata" in body or "private" in body:
            record = await self.records.update(
                record_id, metadata=body.get("metadata"), private=body.get("private")
            )
        if "alias" in body:
            if body["alias"] is None:
                record = await self.records.clear_alias(record_id)
            else:
                record = await self.records.set_alias(record_id, validate_alias(body["alias"]))
            if record.alias != before.alias:
                await self.moved(_aliases([before, record]))
        if "private" in body:
            await self.moved.visibility(record.image_id)
        return self._reply(self._view(record))

    async def delete(self, request: web.Request) -> web.Response:
        record_id = _record_id(request)
        record = await self.records.get(record_id)
        # The marker first: if the delete below fails, the sweep finds the record
        # still there and drops the marker; the other order could orphan the image.
        await mark_for_sweep(self.store, [record.image_id])
        deleted = await self.records.delete(record_id)
        if deleted is None:
            raise NotFound("No record with this id.")
        await self.moved(_aliases([deleted]))
        await self.moved.if_private(self.records, [deleted.image_id])
        return web.Response(status=204, headers=_JSON_HEADERS)

    async def get_alias(self, request: web.Request) -> web.Response:
        owner = validate_owner(request.match_info["owner"])
        alias = validate_alias(request.match_info["alias"])
        return self._reply(self._view(await self.records.get_by_alias(owner, alias)))

    async def point_alias(self, request: web.Request) -> web.Response:
        """The JSON form of ``PUT .../aliases/{alias}``: point it at a record."""
        owner = validate_owner(request.match_info["owner"])
        alias = validate_alias(request.match_info["alias"])
        body = await _json_body(request)
        record_id = parse_record_id(body.get("record_id"))
        record = await self.records.get(record_id)
        if record.owner != owner:
            raise NotFound("No record with this id for this owner.")
        moved = await self.records.set_alias(record_id, alias, move=True)
        await self.moved(_aliases([record, moved]))
        return self._reply(self._view(moved))

    async def delete_alias(self, request: web.Request) -> web.Response:
        owner = validate_owner(request.match_info["owner"])
        alias = validate_alias(request.match_info["alias"])
        record = await self.records.get_by_alias(owner, alias)
        await self.records.clear_alias(record.id)
        await self.moved([(owner, alias)])
        return web.Response(status=204, headers=_JSON_HEADERS)

    async def delete_owner(self, request: web.Request) -> web.Response:
        owner = validate_owner(request.match_info["owner"])
        budget = time.monotonic() + self.settings.record_api.owner_delete_seconds
        removed = 0
        more = True
        while more and time.monotonic() < budget:
            batch = await self.records.delete_owner(owner)
            removed += batch.removed
            more = batch.more
            await mark_for_sweep(self.store, batch.image_ids)
            await self.moved.if_private(self.records, batch.image_ids)
        if removed:
            await self.moved([(owner, None)])
        return self._reply({"owner": owner, "removed": removed, "more": more})
