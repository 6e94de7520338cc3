"""Reconcile's decisions, over the embedded adapters (local directory, in-process queue)."""

from __future__ import annotations

import io
import time
from pathlib import Path

from pinhole.app.reconcile import reconcile
from pinhole.domain.ids import ImageId, image_id_for_bytes
from pinhole.domain.job import SourceInfo, TranscodeJob
from pinhole.domain.keys import PENDING_PREFIX, pending_key
from pinhole.domain.manifest import Manifest, Status
from pinhole.manifests import save_manifest
from pinhole.pending import mark_pending
from pinhole.queue.memory import MemoryJobQueue
from pinhole.settings import Kafka
from storage.fs import FsBlobStore

KAFKA = Kafka()
SOURCE = SourceInfo(format="jpeg", width=10, height=10, bytes=100, has_alpha=False)


async def _image(store: FsBlobStore, name: bytes, status: Status, *, marker: bool) -> ImageId:
    image_id = image_id_for_bytes(name)
    if marker:
        await mark_pending(store, image_id)
    manifest = Manifest(
        id=image_id, status=status, source=SOURCE, created_at=123.0, updated_at=123.0
    )
    await save_manifest(store, manifest)
    return image_id


def _queued(queue: MemoryJobQueue) -> list[ImageId]:
    return [TranscodeJob.decode(m.value).image_id for m in queue.messages(KAFKA.jobs_topic)]


async def test_reconcile_requeues_old_pending_images_and_trims_the_index(tmp_path: Path) -> None:
    store, queue = FsBlobStore(tmp_path), MemoryJobQueue()
    pending = await _image(store, b"pending", Status.PENDING, marker=True)
    unindexed = await _image(store, b"from before the index", Status.PENDING, marker=False)
    ready = await _image(store, b"ready", Status.READY, marker=True)
    failed = await _image(store, b"failed", Status.FAILED, marker=True)
    vanished = image_id_for_bytes(b"never got a manifest")
    await mark_pending(store, vanished)
    later = time.time() + 3600

    # Every marker was written just now: nothing is old enough yet.
    report = await reconcile(store, queue, KAFKA, older_than_seconds=600)
    assert (report.too_recent, report.requeued, report.cleaned) == (4, 0, 0)

    # A dry run says what it would do and does nothing.
    report = await reconcile(store, queue, KAFKA, older_than_seconds=600, now=later, dry_run=True)
    assert (report.requeued, report.cleaned) == (1, 3)
    assert _queued(queue) == []
    assert len([i async for i in store.list(PENDING_PREFIX)]) == 4

    progress = io.StringIO()
    report = await reconcile(
        store, queue, KAFKA, older_than_seconds=600, now=later, progress_stream=progress
    )
    assert (report.examined, report.requeued, report.cleaned, report.failed) == (4, 1, 3, 0)
    assert _queued(queue) == [pending]
    job = TranscodeJob.decode(queue.messages(KAFKA.jobs_topic)[0].value)
    assert (job.request_id, job.submitted_at, job.source) == ("reconcile", 123.0, SOURCE)
    assert "reconcile [" in progress.getvalue() or "reconcile:" in progress.getvalue()
    for image_id in (ready, failed, vanished):
        assert await store.head(pending_key(image_id)) is None
    assert await store.head(pending_key(pending)) is not None

    # A full scan reads every manifest: it finds the unindexed one and indexes it.
    report = await reconcile(store, queue, KAFKA, older_than_seconds=600, now=later, full_scan=True)
    assert report.requeued == 2
    assert sorted(_queued(queue)[1:]) == sorted([pending, unindexed])
    assert await store.head(pending_key(unindexed)) is not None
