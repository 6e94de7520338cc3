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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ingest.quota import create_within_quota
from ingest.sweep import mark_for_sweep
from pinhole.domain.ids import ImageId, InvalidImageId, parse_image_id
from pinhole.domain.keys import status_url, variant_url
from pinhole.domain.ladder import PRESETS
from pinhole.domain.quota import Quota
from pinhole.domain.record import (
    Record,
    RecordId,
    encode_metadata,
    parse_record_id,
    validate_alias,
    validate_owner,
)
from pinhole.errors import BadRequest, InvalidMetadata, NotFound, QueueUnavailable
from pinhole.events import alias_message
from pinhole.manifests import load_manifest
from pinhole.ports import BlobStore, JobQueue, RecordStore
from pinhole.settings import Settings

log = logging.getLogger("pinhole.ingest")

_JSON_HEADERS = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class RecordSpec:
    """What an upload asks for its record: ``owner`` and, optionally, an alias
    (``move``: take it from another record of the owner) and metadata."""

    owner: str
    alias: str | None = None
    metadata: dict[str, Any] | None = None
    move: bool = False

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
            return await records.create(
                self.owner,
                image_id,
                metadata=self.metadata,
                alias=self.alias,
                size_bytes=size_bytes,
                quota=quota,
            )
        record = await records.create(
            self.owner, image_id, metadata=self.metadata, size_bytes=size_bytes, quota=quota
        )
        record = await records.set_alias(record.id, self.alias, move=True)
        if moved is not None:
            await moved([(self.owner, self.alias)])
        return record


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
    if owner is None:
        if given_alias is not None or metadata is not None:
            raise BadRequest("alias and metadata belong to a record: give an owner too.")
        return None
    return RecordSpec(
        validate_owner(owner),
        validate_alias(given_alias) if given_alias is not None else None,
        _metadata(metadata),
        move=alias is not None,
    )


def record_view(record: Record, settings: Settings) -> dict[str, Any]:
    """A record as the API shows it, with its image's status URL and the
    negotiated URL of every preset (built from the id alone: no manifest read)."""
    view = record.to_json()
    view["image"] = {
        "status_url": status_url(settings.status_base_url, record.image_id),
        "urls": {
            p.name: variant_url(settings.edge_base_url, p, record.image_id, None) for p in PRESETS
        },
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
    leaves the CDN's old redirect until its max-age."""

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
        # The store checks alias and metadata (and the owner's quota) before any write.
        record = await create_within_quota(
            self.records,
            self.settings.quotas,
            validate_owner(body.get("owner")),
            image_id,
            manifest.source.bytes,
            metadata=body.get("metadata"),
            alias=body.get("alias"),
        )
        return self._reply(self._view(record), status=201)

    async def get(self, request: web.Request) -> web.Response:
        return self._reply(self._view(await self.records.get(_record_id(request))))

    async def patch(self, request: web.Request) -> web.Response:
        """``metadata`` replaces the metadata; ``alias`` sets the alias (409 if
        another record of the owner has it), ``null`` clears it."""
        record_id = _record_id(request)
        body = await _json_body(request)
        unknown = set(body) - {"metadata", "alias"}
        if unknown:
            raise BadRequest(f"Only metadata and alias can change, not {sorted(unknown)}.")
        record = before = await self.records.get(record_id)
        if "metadata" in body:
            if not isinstance(body["metadata"], dict):
                raise InvalidMetadata("metadata must be a JSON object.")
            record = await self.records.update(record_id, metadata=body["metadata"])
        if "alias" in body:
            if body["alias"] is None:
                record = await self.records.clear_alias(record_id)
            else:
                record = await self.records.set_alias(record_id, validate_alias(body["alias"]))
            if record.alias != before.alias:
                await self.moved(_aliases([before, record]))
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
        if removed:
            await self.moved([(owner, None)])
        return self._reply({"owner": owner, "removed": removed, "more": more})
