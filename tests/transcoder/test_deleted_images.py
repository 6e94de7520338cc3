"""A job for an image deleted since it was queued must not bring the image back."""

from __future__ import annotations

from pathlib import Path

from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.job import SourceInfo, TranscodeJob
from pinhole.domain.keys import manifest_key, original_key
from pinhole.domain.manifest import Manifest, Status
from pinhole.manifests import load_manifest, save_manifest
from pinhole.ports import BlobStore, Message, Rendering
from pinhole.queue.memory import MemoryJobQueue
from pinhole.settings import Settings, Transcode
from storage.fs import FsBlobStore
from tests.support.badinput import small_jpeg
from transcoder.vips_engine import VipsEngine
from transcoder.worker import Transcoder


def _job(data: bytes) -> TranscodeJob:
    image_id = image_id_for_bytes(data)
    source = SourceInfo(format="jpeg", width=64, height=48, bytes=len(data), has_alpha=False)
    return TranscodeJob(
        image_id=image_id, original_key=original_key(image_id), source=source, submitted_at=0.0
    )


async def _keys(store: BlobStore) -> list[str]:
    return [info.key async for info in store.list("")]


def _transcoder(tmp_path: Path) -> tuple[Transcoder, FsBlobStore, MemoryJobQueue]:
    settings = Settings(storage=f"file://{tmp_path}", transcode=Transcode(avif_effort=0))
    store, queue = FsBlobStore(tmp_path), MemoryJobQueue()
    return Transcoder(settings, store, queue, VipsEngine(settings.transcode)), store, queue


async def test_a_job_whose_manifest_is_gone_is_dropped(tmp_path: Path) -> None:
    transcoder, store, queue = _transcoder(tmp_path)
    job = _job(small_jpeg())
    # Deleted before the job ran: no manifest; even a stray original is not rendered.
    await store.put(job.original_key, small_jpeg(), content_type="image/jpeg")
    await transcoder._handle_with_retries(Message(job.image_id, job.encode()))
    assert await _keys(store) == [job.original_key]
    assert queue.messages(transcoder.settings.kafka.dead_letter_topic) == []
    assert queue.messages(transcoder.settings.kafka.events_topic) == []


class DeletedDuringRender(Transcoder):
    """The DELETE lands while the variants are being produced."""

    async def _render(self, data: bytes, job: TranscodeJob) -> Rendering:
        rendering = await super()._render(data, job)
        await self.store.delete(manifest_key(job.image_id))
        await self.store.delete(job.original_key)
        return rendering


async def test_a_delete_during_the_render_takes_back_the_variants(tmp_path: Path) -> None:
    plain, store, queue = _transcoder(tmp_path)
    transcoder = DeletedDuringRender(plain.settings, store, queue, plain.engine)
    data = small_jpeg()
    job = _job(data)
    await store.put(job.original_key, data, content_type="image/jpeg")
    pending = Manifest(
        id=job.image_id, status=Status.PENDING, source=job.source, created_at=0.0, updated_at=0.0
    )
    await save_manifest(store, pending)
    await transcoder.process(job)
    assert await load_manifest(store, job.image_id) is None
    assert await _keys(store) == []
