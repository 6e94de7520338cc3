"""Put an image into a store the way ingest and the transcoder leave it: the
original plus a manifest. With ``ready`` and no variants, every variant URL is a
cold key the edge must render on the fly."""

from __future__ import annotations

import time

import pyvips

from pinhole.domain.ids import ImageId, image_id_for_bytes
from pinhole.domain.job import SourceInfo
from pinhole.domain.keys import original_key
from pinhole.domain.manifest import Manifest, Status
from pinhole.manifests import save_manifest
from pinhole.ports import BlobStore
from tests.support.photos import Photo


def source_info(photo: Photo) -> SourceInfo:
    image = pyvips.Image.new_from_buffer(photo.data, "")
    return SourceInfo(
        format=str(image.get("vips-loader")).removesuffix("load_buffer"),
        width=photo.width,
        height=photo.height,
        bytes=len(photo.data),
        has_alpha=photo.has_alpha,
    )


async def seed_image(store: BlobStore, photo: Photo, status: Status = Status.READY) -> ImageId:
    image_id = image_id_for_bytes(photo.data)
    await store.put(original_key(image_id), photo.data, content_type="application/octet-stream")
    now = time.time()
    manifest = Manifest(
        id=image_id, status=status, source=source_info(photo), created_at=now, updated_at=now
    )
    await save_manifest(store, manifest)
    return image_id
