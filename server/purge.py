"""Deleted images stop being served by every edge process.

Ingest's DELETE drops storage objects and Redis variant entries, then
publishes ``image.deleted`` on the events topic. Each edge process listens
there in its own consumer group (every process must see every delete) and
drops what only it holds: its L1 entries for the whole ladder, its manifest
facts, and the signed renditions it has served, which live only in the caches
(L1 and Redis) and so are known by key only to the edges that made or read
them. ``pinhole up`` does this in-process through the delete's local purge
hook instead. A delete that could not reach Redis queues its Redis purge in
storage, and every edge finishes it once Redis is back (``CachePurgeRetrier``).

``image.visibility`` (a record made private or public, or deleted) travels the
same way: each edge forgets what it knew of the image (``server.privacy``) and
drops its cached ladder bytes, so a newly private image is refused on its public
URLs at once, and ``pinhole cdn-purge`` purges the image's URLs from the CDN,
twice: at once, and again once every edge's knowledge of the image has run out
(``Edge.visibility_ttl_seconds``), since an edge that had not heard yet may
have answered the CDN's refill with the public bytes in between.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from uuid import uuid4

from pinhole.domain.ids import ImageId
from pinhole.domain.keys import PURGE_PREFIX, image_id_of_purge_key, variant_key
from pinhole.domain.ladder import Format, current
from pinhole.errors import CacheUnavailable, TransientError
from pinhole.events import IMAGE_DELETED, IMAGE_VISIBILITY, alias_of_event, image_id_of_event
from pinhole.listening import listen
from pinhole.logs import ThrottledLog
from pinhole.ports import BlobStore, HotCache, JobQueue, Message
from server.facts import ManifestFacts
from server.tiers import VariantTiers

if TYPE_CHECKING:
    from server.privacy import Visibility

log = logging.getLogger("pinhole.server")


def ladder_keys(image_id: ImageId) -> list[str]:
    """Every ladder variant key of one image, in every format."""
    return [variant_key(preset, image_id, fmt) for preset in current() for fmt in Format]


def edge_group(consumer_group: str) -> str:
    """A consumer group of this process alone, so that it sees every delete.

    On real Kafka each restart leaves its group behind; empty groups expire
    with the broker's ``offsets.retention.minutes``.
    """
    return f"{consumer_group}-edge-{uuid4().hex[:12]}"


class SignedKeys:
    """Signed rendition keys this process has served, per image id, bounded.

    Least recently touched images go first once ``max_images`` is reached, and
    an image keeps at most ``max_per_image`` keys; what falls out is still
    unservable after a delete (the signed route checks the manifest first) and
    leaves the caches by TTL.
    """

    def __init__(self, max_images: int = 16_384, max_per_image: int = 64) -> None:
        self._max_images = max_images
        self._max_per_image = max_per_image
        self._keys: OrderedDict[ImageId, dict[str, None]] = OrderedDict()

    def add(self, image_id: ImageId, key: str) -> None:
        keys = self._keys.get(image_id)
        if keys is None:
            keys = self._keys[image_id] = {}
            while len(self._keys) > self._max_images:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(image_id)
        if key in keys:
            return
        keys[key] = None
        if len(keys) > self._max_per_image:
            del keys[next(iter(keys))]

    def pop(self, image_id: ImageId) -> list[str]:
        return list(self._keys.pop(image_id, {}))

    def __len__(self) -> int:
        return len(self._keys)


class EdgePurger:
    """Drops one image from what this edge process serves."""

    def __init__(
        self,
        tiers: VariantTiers,
        facts: ManifestFacts,
        signed: SignedKeys,
        visibility: Callable[[], Visibility | None] = lambda: None,
    ) -> None:
        self.tiers = tiers
        self.facts = facts
        self.signed = signed
        self.visibility = visibility

    async def purge(self, image_id: ImageId) -> None:
        await self._purge(image_id, [])

    async def visibility_changed(self, image_id: ImageId) -> None:
        """``image.visibility``: what ``purge`` drops, and the image's ladder
        bytes in Redis, cached under public keys while the image was public."""
        await self._purge(image_id, ladder_keys(image_id))

    async def _purge(self, image_id: ImageId, shared: list[str]) -> None:
        visibility = self.visibility()
        if visibility is not None:
            visibility.forget(image_id)
        signed = self.signed.pop(image_id)
        self.tiers.evict(*ladder_keys(image_id), *signed)
        self.facts.forget(image_id)
        if (signed or shared) and self.tiers.l2 is not None:
            try:
                await self.tiers.l2.delete(*signed, *shared)
            except CacheUnavailable as err:
                # Unservable anyway: the manifest is gone, so the route 404s.
                log.warning(
                    "could not drop signed renditions from the hot cache",
                    extra={"id": image_id, "error": str(err)},
                )
        log.info("purged a deleted image", extra={"id": image_id, "signed": len(signed)})


class CachePurgeRetrier:
    """Finishes the hot-cache purges deletes could not do while Redis was down.

    A delete that cannot reach Redis leaves a marker under ``purge/`` in storage
    (``ingest.delete``). Every edge process lists them every ``every_seconds``
    and, once Redis answers, drops the image's ladder keys from it and then the
    marker. Edges racing on one marker is harmless: both DELs are idempotent.
    """

    def __init__(self, store: BlobStore, cache: HotCache, every_seconds: float) -> None:
        self.store = store
        self.cache = cache
        self.every_seconds = every_seconds
        self._down = ThrottledLog(log)

    async def retry_once(self) -> int:
        """Purge every queued image; how many. Raises ``TransientError`` if the
        cache or storage is still down (the rest wait for the next round)."""
        purged = 0
        async for info in self.store.list(PURGE_PREFIX):
            image_id = image_id_of_purge_key(info.key)
            if image_id is None:
                continue
            await self.cache.delete(*ladder_keys(image_id))
            await self.store.delete(info.key)
            log.info("queued cache purge done", extra={"id": image_id})
            purged += 1
        return purged

    async def run(self) -> None:
        while True:
            try:
                await self.retry_once()
                self._down.recovered("down", "queued cache purges resume")
            except TransientError as err:
                self._down.warning("down", "queued cache purges wait", error=str(err))
            except Exception:
                # The server must outlive the retrier (one line a round).
                log.exception("queued cache purges failed unexpectedly")
            await asyncio.sleep(self.every_seconds * random.uniform(0.5, 1.5))


class DeleteListener:
    """Reads the events topic for ``image.deleted`` and calls ``purge``, until stopped.

    Serves both the edge processes (each in a group of its own: every process
    drops its own copies) and ``pinhole cdn-purge`` (one shared group: one CDN
    purge per delete). A broker outage is logged and retried (with backoff) for
    as long as the process lives; it never reaches request handling. Acks
    commit the group's offset after ``purge`` returns, so deletes published
    during an outage, or in flight at a stop, are applied once it ends.
    """

    RETRY_PAUSE_SECONDS = 1.0

    def __init__(
        self,
        queue: JobQueue,
        topic: str,
        group: str,
        purge: Callable[[ImageId], Awaitable[None]],
        *,
        who: str = "edge",
        purge_alias: Callable[[str, str | None], Awaitable[None]] | None = None,
        purge_visibility: Callable[[ImageId], Awaitable[None]] | None = None,
        repurge_after_seconds: float | None = None,
    ) -> None:
        self.queue = queue
        self.topic = topic
        self.group = group
        self.purge = purge
        self.purge_alias = purge_alias
        # image.visibility: ``purge`` unless told otherwise, and once more after
        # ``repurge_after_seconds`` when set (the CDN purger: see the module doc).
        self.purge_visibility = purge_visibility or purge
        self.repurge_after_seconds = repurge_after_seconds
        self._repurges: set[asyncio.Task[None]] = set()
        self.who = who
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        try:
            await listen(
                self.queue,
                self.topic,
                self.group,
                self._handle,
                who=f"{self.who} delete listener",
                listening=f"{self.who} listening for deletes",
                subscribed=self.subscribed,
                pause_seconds=self.RETRY_PAUSE_SECONDS,
            )
        finally:
            # A second purge still waiting is lost with the process; the first
            # was done before the event's offset was committed.
            for task in self._repurges:
                task.cancel()

    async def _repurge(self, image_id: ImageId, after_seconds: float) -> None:
        await asyncio.sleep(after_seconds)
        try:
            await self.purge_visibility(image_id)
        except Exception:
            log.exception("second purge of an image that changed visibility failed")

    async def _handle(self, message: Message) -> None:
        image_id = image_id_of_event(message, IMAGE_DELETED)
        if image_id is not None:
            await self.purge(image_id)
        elif (changed := image_id_of_event(message, IMAGE_VISIBILITY)) is not None:
            await self.purge_visibility(changed)
            if self.repurge_after_seconds is not None:
                task = asyncio.create_task(self._repurge(changed, self.repurge_after_seconds))
                self._repurges.add(task)
                task.add_done_callback(self._repurges.discard)
        elif self.purge_alias is not None and (moved := alias_of_event(message)):
            await self.purge_alias(*moved)
