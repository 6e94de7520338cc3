"""Images whose last record went away: deleted after a grace period, race-free.

An image is content; records are owners' uses of it. When a record goes, a
*sweep marker* (``sweep/ab/cd/ef/<id>``) is written first: a candidate, not a
verdict. Every ingest process looks at markers older than the grace period
(``record_api.sweep_grace_seconds``) and, holding the image's lock
(``pinhole.locks``), deletes the image only if no record of any owner names it
any more; else it drops the marker.

A re-upload of the same bytes meanwhile never loses the image:

- it writes its record first, then looks for a marker;
- marker there: it takes the same lock, so the sweep either finished before it
  (the image is gone, and the upload restores it from the bytes it holds) or
  starts after it (and counts its record);
- no marker: no sweep can be under way (the sweep deletes its marker last,
  under the lock), and one that starts later counts the new record, since the
  grace period dwarfs the upload's own deadline; if a sweep finished just
  before, the image's manifest is gone, and the upload restores it.

So no blob is deleted while a record names it, and a record never names an
image that is gone for good.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable

from pinhole.domain.ids import ImageId
from pinhole.domain.keys import (
    SWEEP_PREFIX,
    image_id_of_sweep_key,
    image_lock_key,
    manifest_key,
    sweep_key,
)
from pinhole.domain.record import Record
from pinhole.errors import PinholeError, TransientError
from pinhole.locks import held
from pinhole.ports import BlobStore, RecordStore

log = logging.getLogger("pinhole.ingest")

_MARKER_TYPE = "application/octet-stream"

# Deletes an image everywhere (ingest.delete.delete_image, bound to its
# dependencies); ``False`` if there was none.
DeleteImage = Callable[[ImageId], Awaitable[bool]]
# Puts the image back from the upload in hand: original, pending manifest, job.
Restore = Callable[[], Awaitable[None]]


async def mark_for_sweep(store: BlobStore, image_ids: Iterable[ImageId]) -> None:
    """Candidates for deletion: written before (or right after) records go. An
    overwrite restarts the grace period, which only ever delays a deletion."""
    await asyncio.gather(
        *(store.put(sweep_key(i), b"", content_type=_MARKER_TYPE) for i in set(image_ids))
    )


async def attach_record(
    store: BlobStore, create: Callable[[], Awaitable[Record]], image_id: ImageId, restore: Restore
) -> tuple[Record, bool]:
    """``create()`` the upload's record, and make sure its image stays (see
    above): the record, and whether the image had to be restored."""
    marker = sweep_key(image_id)
    if await store.head(marker) is None:
        record = await create()
        if await store.head(manifest_key(image_id)) is not None:
            return record, False
        # A sweep finished between our upload's checks and our record.
        async with held(store, image_lock_key(image_id)):
            restored = await store.head(manifest_key(image_id)) is None
            if restored:
                await restore()
        return record, restored
    async with held(store, image_lock_key(image_id)):
        record = await create()
        restored = await store.head(manifest_key(image_id)) is None
        if restored:
            await restore()
        await store.delete(marker)
    return record, restored


class Sweeper:
    """Deletes the images whose markers are older than the grace period and that
    no record names. Safe in every ingest process at once (the image lock)."""

    def __init__(
        self,
        store: BlobStore,
        records: RecordStore,
        delete_image: DeleteImage,
        *,
        grace_seconds: float,
        interval_seconds: float,
    ) -> None:
        self.store = store
        self.records = records
        self.delete_image = delete_image
        self.grace_seconds = grace_seconds
        self.interval_seconds = interval_seconds

    async def sweep_once(self, now: float | None = None) -> tuple[int, int]:
        """One pass: (images deleted, markers dropped because a record names the image)."""
        cutoff = (time.time() if now is None else now) - self.grace_seconds
        due = [
            image_id
            async for info in self.store.list(SWEEP_PREFIX)
            if info.last_modified <= cutoff
            and (image_id := image_id_of_sweep_key(info.key)) is not None
        ]
        deleted = kept = 0
        for image_id in due:
            if await self._sweep(image_id):
                deleted += 1
            else:
                kept += 1
        if deleted or kept:
            log.info("record sweep", extra={"deleted": deleted, "kept": kept})
        return deleted, kept

    async def _sweep(self, image_id: ImageId) -> bool:
        marker = sweep_key(image_id)
        async with held(self.store, image_lock_key(image_id)):
            if await self.store.head(marker) is None:
                return False  # another process swept it, or an upload took it back
            if await self.records.count_by_image(image_id) > 0:
                await self.store.delete(marker)
                return False
            await self.delete_image(image_id)
            await self.store.delete(marker)
            return True

    async def run(self) -> None:
        """Sweep every ``interval_seconds`` (jittered, so processes spread out),
        until cancelled; an outage is logged and retried at the next pass."""
        while True:
            await asyncio.sleep(self.interval_seconds * random.uniform(0.5, 1.5))
            try:
                await self.sweep_once()
            except (TransientError, PinholeError) as exc:
                log.warning("record sweep failed; retrying later", extra={"error": str(exc)})
