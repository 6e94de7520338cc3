"""Reading and writing manifests through a BlobStore: the one place that does it."""

from __future__ import annotations

from pinhole.domain.ids import ImageId
from pinhole.domain.keys import manifest_key
from pinhole.domain.manifest import Manifest
from pinhole.errors import ObjectNotFound
from pinhole.ports import BlobStore

MANIFEST_CONTENT_TYPE = "application/json"


async def load_manifest(store: BlobStore, image_id: ImageId) -> Manifest | None:
    try:
        stored = await store.get(manifest_key(image_id))
    except ObjectNotFound:
        return None
    return Manifest.decode(stored.body)


async def save_manifest(store: BlobStore, manifest: Manifest, *, if_absent: bool = False) -> bool:
    return await store.put(
        manifest_key(manifest.id),
        manifest.encode(),
        content_type=MANIFEST_CONTENT_TYPE,
        if_absent=if_absent,
    )
