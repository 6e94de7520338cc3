"""``pinhole import`` of a folder of real photos, duplicates and hostile files
into real S3 (moto) and Kafka (tansu); then a real ``pinhole transcode``
process makes every imported image ready."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import ImageId
from pinhole.domain.keys import original_key
from pinhole.domain.manifest import Manifest, Status
from pinhole.manifests import load_manifest
from pinhole.ports import BlobStore
from tests.support.importer import (
    SourceFile,
    hostile_files,
    image_id_of,
    run_import_process,
    stack,
    write_tree,
)
from tests.support.photos import Photo, load_photo, rotated_with_exif, transparent_png
from tests.support.processes import start_pinhole
from tests.support.services import MotoS3, TansuBroker

pytestmark = pytest.mark.slow


def photos() -> list[Photo]:
    """Four real photos of moderate size: portrait, alpha, EXIF rotation, transparency."""
    return [
        load_photo("flow-dark-720x1440-portrait.jpg"),
        load_photo("kay-dark-1080x1920-alpha.png"),
        rotated_with_exif("autumn-2560x1600.jpg"),
        transparent_png("autumn-2560x1600.jpg", width=600),
    ]


@pytest.fixture
async def dest(moto_s3: MotoS3, unique_name: str) -> AsyncIterator[BlobStore]:
    store = build_blob_store(moto_s3.url(unique_name))
    yield store
    await store.close()


async def wait_all_ready(store: BlobStore, ids: list[ImageId]) -> dict[ImageId, Manifest]:
    timeout = 240.0
    deadline = time.monotonic() + timeout
    manifests: dict[ImageId, Manifest] = {}
    while time.monotonic() < deadline:
        for image_id in ids:
            manifest = await load_manifest(store, image_id)
            if manifest is not None:
                manifests[image_id] = manifest
        if len(manifests) == len(ids) and all(
            m.status is not Status.PENDING for m in manifests.values()
        ):
            return manifests
        await asyncio.sleep(0.5)
    states = {i: m.status for i, m in manifests.items()}
    raise AssertionError(f"not all ready after {timeout}s: {states}")


async def test_folder_import_then_transcode(
    tmp_path: Path,
    moto_s3: MotoS3,
    tansu: TansuBroker,
    unique_name: str,
    dest: BlobStore,
) -> None:
    good = photos()
    hostile = hostile_files()
    files = [
        SourceFile(f"{'nested/deeper/' if i % 2 else ''}{p.name}.img", p.data)
        for i, p in enumerate(good)
    ]
    # The same bytes twice more, under other names and folders.
    files.append(SourceFile("copies/again.jpg", good[0].data))
    files.append(SourceFile("copies/nested/again-2.png", good[1].data))
    source = tmp_path / "photos"
    write_tree(source, files + hostile)
    env = stack(moto_s3, tansu, unique_name)

    status, summary, stderr = run_import_process(str(source), env, tmp_path, "--concurrency", "3")

    assert status == 0, stderr
    assert summary["total"] == len(files) + len(hostile)
    assert summary["imported"] == len(good)
    assert summary["duplicates"] == 2
    assert summary["skipped"] == 0
    assert summary["failed"] == {}
    expected = Counter(f.code for f in hostile)
    rejected = summary["rejected"]
    assert isinstance(rejected, dict)
    assert {code: r["count"] for code, r in rejected.items()} == dict(expected)
    for code, r in rejected.items():
        paths_with_code = {f.path for f in hostile if f.code == code}
        assert r["examples"]
        assert set(r["examples"]) <= paths_with_code
    # The progress bar went to stderr, the summary alone to stdout.
    assert "import" in stderr

    # Every good photo is stored under its content id, pending; nothing else is.
    ids = [image_id_of(p.data) for p in good]
    for image_id in ids:
        assert await dest.head(original_key(image_id)) is not None
    originals = [info.key async for info in dest.list("originals/")]
    assert sorted(originals) == sorted(original_key(i) for i in ids)

    # A real transcoder on the same broker picks the jobs up.
    transcoder = start_pinhole("transcode", env, tmp_path)
    try:
        manifests = await wait_all_ready(dest, ids)
    finally:
        transcoder.stop()
    for photo, image_id in zip(good, ids, strict=True):
        manifest = manifests[image_id]
        assert manifest.status is Status.READY, manifest.failure
        assert (manifest.source.width, manifest.source.height) == (photo.width, photo.height)
        assert manifest.variants

    # A second run is a no-op by the journal; with a fresh journal, every
    # photo is a duplicate of a ready image and nothing is written again.
    status, again, stderr = run_import_process(str(source), env, tmp_path)
    assert status == 0, stderr
    assert (again["skipped"], again["imported"], again["duplicates"]) == (again["total"], 0, 0)
    status, fresh, stderr = run_import_process(
        str(source), env, tmp_path, "--journal", str(tmp_path / "other.journal")
    )
    assert status == 0, stderr
    assert (fresh["imported"], fresh["duplicates"]) == (0, len(good) + 2)
    assert fresh["rejected"] == summary["rejected"]
