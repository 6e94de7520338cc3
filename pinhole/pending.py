"""The pending index: one empty marker per accepted upload not yet known to be done.

The pending manifest is the durable record of an accepted upload; the marker
beside it lets ``pinhole reconcile`` find pending images by listing a prefix
that holds only recent uploads, instead of reading every manifest ever
written. Ingest writes the marker before the manifest, so no pending manifest
is ever without one; reconcile drops markers whose image is ready, failed or
gone, so the index stays as small as the backlog.
"""

from __future__ import annotations

from pinhole.domain.ids import ImageId, InvalidImageId, parse_image_id
from pinhole.domain.keys import pending_key
from pinhole.ports import BlobStore

_CONTENT_TYPE = "application/octet-stream"


def image_id_of_marker(key: str) -> ImageId | None:
    """The id a marker key names, or ``None`` for a key that is not one of ours."""
    try:
        image_id = parse_image_id(key.rsplit("/", 1)[-1])
    except InvalidImageId:
        return None
    return image_id if key == pending_key(image_id) else None


async def mark_pending(store: BlobStore, image_id: ImageId) -> None:
    # An overwrite, not if_absent: a retried upload restarts the reconcile clock.
    await store.put(pending_key(image_id), b"", content_type=_CONTENT_TYPE)


async def clear_pending(store: BlobStore, image_id: ImageId) -> None:
    await store.delete(pending_key(image_id))
