"""Deleting an image: every stored byte, every cache entry, then the CDN purge event.

The order makes a failed delete safe to retry. The original goes first, so
nothing can render the image again; then the variants and the hot-cache
entries; then ``image.deleted`` is published for CDN purgers; the manifest goes
last. Until then the image is still found, so a client whose DELETE failed
half-way (503) repeats it and the repeat finishes the job.

An erasure does not wait for a cache: if the shared hot cache (Redis) cannot
be reached, a purge marker is written to storage instead (``purge/``, beside the
image's other keys) and the delete goes on; every edge retries those markers
until Redis answers (``server.purge.CachePurgeRetrier``). The window that
leaves: a Redis that comes back with its data (a network split, not a restart)
may serve the deleted variants to edges until the first retry after it answers,
within ``hot_cache.purge_retry_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pinhole.domain.ids import ImageId
from pinhole.domain.keys import manifest_key, original_key, purge_key, variant_key
from pinhole.domain.ladder import Format, current
from pinhole.errors import CacheUnavailable
from pinhole.events import IMAGE_DELETED, event_message
from pinhole.pending import clear_pending
from pinhole.ports import BlobStore, HotCache, JobQueue
from pinhole.settings import Kafka

log = logging.getLogger("pinhole.ingest")

_MARKER_TYPE = "application/octet-stream"

# Drops an image's entries from caches in this very process (the edge inside
# `pinhole up`): its id and its variant keys.
LocalPurge = Callable[[ImageId, list[str]], None]


def variant_keys(image_id: ImageId) -> list[str]:
    """Every variant key the ladder can produce for this id, in every format.

    All four formats, not just the ones the manifest lists: a fallback may
    have been rendered on the fly, and deleting a missing key costs nothing.
    Variant cache keys are these same keys.
    """
    return [variant_key(preset, image_id, fmt) for preset in current() for fmt in Format]


async def delete_image(
    image_id: ImageId,
    *,
    store: BlobStore,
    cache: HotCache | None,
    queue: JobQueue,
    kafka: Kafka,
    local_purge: LocalPurge | None = None,
) -> bool:
    """``False`` if there was no such image. Storage and broker errors propagate
    (a 503 for the client), leaving the manifest for the retry; a cache that is
    down leaves a purge marker instead."""
    exists = await store.head(manifest_key(image_id)) is not None
    if not exists and await store.head(original_key(image_id)) is None:
        await clear_pending(store, image_id)
        return False
    await store.delete(original_key(image_id))
    keys = variant_keys(image_id)
    await asyncio.gather(*(store.delete(key) for key in keys))
    if cache is not None:
        try:
            await cache.delete(*keys)
        except CacheUnavailable as exc:
            # Durably queued: the edges purge it once the cache is back.
            await store.put(purge_key(image_id), b"", content_type=_MARKER_TYPE)
            log.warning(
                "hot cache down; its purge is queued",
                extra={"image_id": image_id, "error": str(exc)},
            )
    if local_purge is not None:
        local_purge(image_id, keys)
    await queue.publish(kafka.events_topic, event_message(IMAGE_DELETED, image_id))
    await clear_pending(store, image_id)
    await store.delete(manifest_key(image_id))
    log.info("image deleted", extra={"image_id": image_id})
    return True
