"""Accepting a spooled image: the steps every way in shares, with no HTTP in them.

``POST /v1/images`` and ``pinhole import`` both spool the bytes first (a
``Spool``, so nothing is held in memory whole), then call these two steps in
order, so an imported file passes exactly the checks and writes of an upload:

1. ``admit_spooled``: the file checks (``ingest.validate``), the content id
   and the lookup of an earlier copy (``check_spooled``), then the raw original
   stored with a conditional put, unless the image was already processed (a
   duplicate, which stores nothing).
2. ``enqueue_admitted``: the pending marker, the pending manifest (the durable
   record of acceptance) and the transcode job, in that order.

The spool may be closed between the two: step 2 reads only the admitted facts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ingest.spool import Spooled
from ingest.validate import validate
from pinhole.domain.ids import ImageId, image_id_from_digest
from pinhole.domain.job import SourceInfo
from pinhole.domain.keys import original_key
from pinhole.domain.manifest import Focal, Manifest, Status
from pinhole.jobs import publish_job, transcode_job
from pinhole.manifests import load_manifest, save_manifest
from pinhole.pending import mark_pending
from pinhole.ports import BlobStore, JobQueue
from pinhole.settings import Kafka, Limits


@dataclass(frozen=True)
class Admitted:
    """A valid image whose original is stored (or was already processed)."""

    image_id: ImageId
    source: SourceInfo
    size: int
    # The manifest found before storing: ``None`` for a new image.
    existing: Manifest | None

    @property
    def duplicate(self) -> bool:
        """Already ready or failed: nothing was stored and nothing is to be queued.

        A *pending* duplicate is not one: its upload is redone in full, which
        heals a job lost after the first attempt's manifest was written."""
        return self.existing is not None and self.existing.status is not Status.PENDING


async def check_spooled(store: BlobStore, spooled: Spooled, limits: Limits) -> Admitted:
    """The file checks and the lookup of an earlier copy, writing nothing
    (``pinhole import --dry-run`` stops here).

    Raises a ``PinholeError`` (with its stable code) for a file refused by the
    checks, a ``TransientError`` if storage fails."""
    source = await asyncio.to_thread(validate, spooled, limits)
    image_id = image_id_from_digest(spooled.sha256)
    existing = await load_manifest(store, image_id)
    return Admitted(image_id, source, spooled.size, existing)


async def store_original(store: BlobStore, spooled: Spooled, admitted: Admitted) -> None:
    """The raw original, with a conditional put: an existing copy is kept (dedup)."""
    await store.put_file(
        original_key(admitted.image_id),
        spooled.path,
        content_type=f"image/{admitted.source.format}",
        if_absent=True,
    )


async def admit_spooled(store: BlobStore, spooled: Spooled, limits: Limits) -> Admitted:
    """Check the spooled file, then store its original unless it is a duplicate."""
    admitted = await check_spooled(store, spooled, limits)
    if not admitted.duplicate:
        await store_original(store, spooled, admitted)
    return admitted


async def enqueue_admitted(
    store: BlobStore,
    queue: JobQueue,
    kafka: Kafka,
    admitted: Admitted,
    request_id: str,
    focal: Focal | None = None,
) -> Manifest:
    """Record the admitted image as pending, then publish its transcode job.

    Raises ``QueueUnavailable`` if the job could not be published: the image is
    then stored and pending, and reconcile will queue it later."""
    image_id = admitted.image_id
    now = time.time()
    manifest = admitted.existing or Manifest(
        id=image_id,
        status=Status.PENDING,
        source=admitted.source,
        created_at=now,
        updated_at=now,
        focal=focal,
    )
    # The pending manifest is the durable record of acceptance: written before the
    # job, so a lost message is healed by reconcile, never a lost upload. Its index
    # entry goes first, so reconcile can find every pending manifest.
    await mark_pending(store, image_id)
    if admitted.existing is None:
        await save_manifest(store, manifest, if_absent=True)
    await publish_job(queue, kafka, transcode_job(manifest, request_id))
    return manifest
