"""A transcoder whose subscription fails keeps going: it subscribes again,
consumes what was queued, and ends only when stopped.

The queue is the in-process one, with the failures injected at its subscribe
and its deliveries (a broker that went away between the queue's connection and
the subscribe, or a fetch the Kafka adapter gave up on: both reach the worker
as QueueUnavailable)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

import pytest
import pyvips

from pinhole.domain.ids import ImageId, image_id_for_bytes
from pinhole.domain.job import SourceInfo, TranscodeJob
from pinhole.domain.keys import original_key
from pinhole.domain.manifest import Manifest, Status
from pinhole.errors import QueueUnavailable
from pinhole.manifests import load_manifest, save_manifest
from pinhole.ports import Delivery, Message
from pinhole.queue.memory import MemoryJobQueue, MemorySubscription
from pinhole.settings import Settings, Transcode
from storage.fs import FsBlobStore
from transcoder import worker
from transcoder.vips_engine import VipsEngine
from transcoder.worker import Transcoder


class FlakyQueue(MemoryJobQueue):
    """Refuses the first ``refusals`` subscribes, and breaks the first
    subscription it does open after one delivery."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals
        self.subscribes = 0

    async def subscribe(
        self, topic: str, group: str, *, start: Literal["earliest", "latest"] = "earliest"
    ) -> MemorySubscription:
        self.subscribes += 1
        if self.subscribes <= self.refusals:
            raise QueueUnavailable("kafka: subscribing failed: the coordinator is gone")
        subscription = await super().subscribe(topic, group, start=start)
        if self.subscribes == self.refusals + 1:
            return BreakingSubscription(subscription)  # type: ignore[return-value]
        return subscription


class BreakingSubscription:
    def __init__(self, inner: MemorySubscription) -> None:
        self.inner = inner
        self.given = 0

    def __aiter__(self) -> BreakingSubscription:
        return self

    async def __anext__(self) -> Delivery:
        if self.given == 1:
            raise QueueUnavailable("kafka: consuming failed: the broker went away")
        self.given += 1
        return await anext(self.inner)

    async def close(self) -> None:
        await self.inner.close()


async def _queued(store: FsBlobStore, queue: MemoryJobQueue, settings: Settings, n: int) -> ImageId:
    data: bytes = pyvips.Image.black(40 + n, 30).write_to_buffer(".jpg")
    image_id = image_id_for_bytes(data)
    source = SourceInfo(format="jpeg", width=40 + n, height=30, bytes=len(data), has_alpha=False)
    await store.put(original_key(image_id), data, content_type="image/jpeg")
    await save_manifest(
        store,
        Manifest(id=image_id, status=Status.PENDING, source=source, created_at=0, updated_at=0),
    )
    job = TranscodeJob(
        image_id=image_id, original_key=original_key(image_id), source=source, submitted_at=0.0
    )
    await queue.publish(settings.kafka.jobs_topic, Message(image_id, job.encode()))
    return image_id


async def test_a_failed_subscription_is_opened_again_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "RESUBSCRIBE_PAUSE_SECONDS", 0.01, raising=False)
    settings = Settings(storage=f"file://{tmp_path}", transcode=Transcode(avif_effort=0))
    store, queue = FsBlobStore(tmp_path), FlakyQueue(refusals=2)
    transcoder = Transcoder(settings, store, queue, VipsEngine(settings.transcode))
    images = [await _queued(store, queue, settings, n) for n in range(2)]
    running = asyncio.create_task(transcoder.run())
    async with asyncio.timeout(60):
        while True:
            manifests = [await load_manifest(store, image_id) for image_id in images]
            if all(m is not None and m.status is Status.READY for m in manifests):
                break
            assert not running.done(), "the worker ended"
            await asyncio.sleep(0.05)
    # Two refused subscribes, one that broke after a delivery, one that works.
    assert queue.subscribes == 4
    transcoder.stop()
    async with asyncio.timeout(10):
        await running
