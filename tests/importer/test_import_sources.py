"""A bucket as the source, ``--dry-run``, and the in-process transcoder that a
``memory://`` queue gets; run in the test process against real moto and tansu."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pinhole.app.importer import run_import
from pinhole.app.wiring import build_blob_store
from pinhole.domain.keys import original_key, pending_key
from pinhole.domain.manifest import Status
from pinhole.manifests import load_manifest
from pinhole.ports import BlobStore
from pinhole.settings import Settings
from tests.support.importer import (
    SourceFile,
    hostile_files,
    image_id_of,
    journal_keys,
    small_photos,
    stack,
    write_tree,
)
from tests.support.services import MotoS3, TansuBroker


def settings_for(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings read from the environment, as the command reads them."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.fixture
async def store_for(moto_s3: MotoS3) -> AsyncIterator[dict[str, BlobStore]]:
    opened: dict[str, BlobStore] = {}
    yield opened
    for store in opened.values():
        await store.close()


def open_store(opened: dict[str, BlobStore], moto_s3: MotoS3, bucket: str) -> BlobStore:
    opened[bucket] = opened.get(bucket) or build_blob_store(moto_s3.url(bucket))
    return opened[bucket]


async def test_bucket_prefix_source(
    tmp_path: Path,
    moto_s3: MotoS3,
    tansu: TansuBroker,
    unique_name: str,
    store_for: dict[str, BlobStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source_bucket = f"{unique_name}-src"
    source = open_store(store_for, moto_s3, source_bucket)
    images = small_photos(3)
    bad = [f for f in hostile_files("incoming/bad") if f.code != "image-too-large"][:4]
    good = [SourceFile(f"incoming/{i}/photo.jpg", data) for i, data in enumerate(images)]
    for f in [*good, *bad]:
        await source.put(f.path, f.data, content_type="application/octet-stream")
    await source.put("incoming/folder/", b"", content_type="application/x-directory")
    await source.put("incoming/copy-of-0.jpg", images[0], content_type="image/jpeg")
    # Outside the prefix: not part of this import.
    outside = small_photos(4)[3]
    await source.put("elsewhere/photo.jpg", outside, content_type="image/jpeg")

    env = stack(moto_s3, tansu, unique_name)
    settings = settings_for(env, monkeypatch)
    journal = tmp_path / "bucket.journal"
    url = f"s3://{source_bucket}/incoming/?endpoint={moto_s3.endpoint}&region=us-east-1"
    report = await run_import(
        settings, url, concurrency=2, journal_path=journal, progress_stream=io.StringIO()
    )

    assert report.total == len(good) + len(bad) + 1
    assert (report.imported, report.duplicates, report.skipped) == (3, 1, 0)
    assert {c: t.count for c, t in report.rejected.items()} == _codes(bad)
    assert report.failed == {}
    assert report.exit_status == 0
    dest = open_store(store_for, moto_s3, unique_name)
    for data in images:
        image_id = image_id_of(data)
        assert await dest.head(original_key(image_id)) is not None
        assert await dest.head(pending_key(image_id)) is not None
        manifest = await load_manifest(dest, image_id)
        assert manifest is not None
        assert manifest.status is Status.PENDING
    assert await dest.head(original_key(image_id_of(outside))) is None
    assert sorted(journal_keys(journal)) == sorted(
        [f.path for f in good + bad] + ["incoming/copy-of-0.jpg"]
    )
    # The source bucket is read, never written.
    assert len([i async for i in source.list("")]) == len(good) + len(bad) + 3


def _codes(files: list[SourceFile]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in files:
        assert f.code is not None
        out[f.code] = out.get(f.code, 0) + 1
    return out


async def test_dry_run_writes_nothing(
    tmp_path: Path,
    moto_s3: MotoS3,
    tansu: TansuBroker,
    unique_name: str,
    store_for: dict[str, BlobStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images = small_photos(2)
    bad = hostile_files()[:3]
    files = [SourceFile(f"{i}.jpg", d) for i, d in enumerate(images)]
    files.append(SourceFile("dup.jpg", images[0]))
    write_tree(tmp_path / "src", files + bad)
    settings = settings_for(stack(moto_s3, tansu, unique_name), monkeypatch)
    journal = tmp_path / "dry.journal"

    report = await run_import(
        settings,
        str(tmp_path / "src"),
        journal_path=journal,
        dry_run=True,
        progress_stream=io.StringIO(),
    )

    assert (report.imported, report.duplicates) == (2, 1)
    assert {c: t.count for c, t in report.rejected.items()} == _codes(bad)
    assert "would import" in report.text()
    dest = open_store(store_for, moto_s3, unique_name)
    assert [info.key async for info in dest.list("")] == []
    assert not journal.exists()


async def test_memory_queue_transcodes_in_process(tmp_path: Path) -> None:
    """With the ``pinhole up`` defaults (local disk, in-process queue) nothing
    else would ever consume the jobs, so the import renders them itself."""
    images = small_photos(2)
    write_tree(tmp_path / "src", [SourceFile(f"{i}.jpg", d) for i, d in enumerate(images)])
    write_tree(tmp_path / "src", hostile_files()[:1])
    settings = Settings(storage=f"file://{tmp_path / 'store'}", queue="memory://")
    stream = io.StringIO()

    report = await run_import(
        settings, str(tmp_path / "src"), journal_path=tmp_path / "j", progress_stream=stream
    )

    assert (report.imported, report.transcoded) == (2, 2)
    assert report.rejected_count == 1
    assert "transcode" in stream.getvalue()
    store = build_blob_store(settings.storage)
    try:
        for data in images:
            manifest = await load_manifest(store, image_id_of(data))
            assert manifest is not None
            assert manifest.status is Status.READY
    finally:
        await store.close()
    summary = report.as_json()
    assert json.loads(json.dumps(summary))["transcoded"] == 2


async def test_a_failed_file_is_not_journaled_and_the_rerun_does_it(tmp_path: Path) -> None:
    """A transient failure (here a source file that cannot be read) makes the
    exit status 1 and stays out of the journal; the same command later does it."""
    source = tmp_path / "src"
    write_tree(source, hostile_files()[:1])
    (source / "later.jpg").symlink_to(tmp_path / "not-yet-there.jpg")
    settings = Settings(storage=f"file://{tmp_path / 'store'}", queue="memory://")
    journal = tmp_path / "j"

    first = await run_import(
        settings, str(source), journal_path=journal, progress_stream=io.StringIO()
    )

    assert {c: t.examples for c, t in first.failed.items()} == {"source-unreadable": ["later.jpg"]}
    assert first.exit_status == 1
    assert "run the same command again" in first.text()
    assert journal_keys(journal) == [hostile_files()[0].path]

    (tmp_path / "not-yet-there.jpg").write_bytes(small_photos(1)[0])
    second = await run_import(
        settings, str(source), journal_path=journal, progress_stream=io.StringIO()
    )

    assert (second.skipped, second.imported, second.failed_count) == (1, 1, 0)
    assert second.exit_status == 0
