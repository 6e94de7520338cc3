"""Duplicate jobs of one image, on a real transcoder process (tansu, moto).

A job can be queued more than once for an image: a redelivery after a crash,
reconcile re-enqueueing an image whose job was slow, a client retrying an
upload. Every job of one image lands on one partition, and a worker takes a
few jobs of a partition at once, so duplicates are often in hand together.
The image must still be rendered once and dead-lettered at most once, and
``pinhole_jobs_processed_total`` must count the duplicates as ``skipped``,
not as renders (``ready``) or failures.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pyvips
from aiokafka import AIOKafkaConsumer, TopicPartition

from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import ImageId, image_id_for_bytes
from pinhole.domain.job import SourceInfo, TranscodeJob
from pinhole.domain.keys import original_key
from pinhole.domain.manifest import Manifest, Status
from pinhole.jobs import publish_job
from pinhole.manifests import load_manifest, save_manifest
from pinhole.ports import BlobStore
from pinhole.queue.kafka import KafkaJobQueue
from pinhole.settings import Kafka
from tests.support.processes import PinholeProcess, start_pinhole
from tests.support.services import MotoS3, TansuBroker
from tests.support.workers import rendered

pytestmark = pytest.mark.slow

PARTITIONS = 2
SESSION_MS = 3000
_PROCESSED = re.compile(r'^pinhole_jobs_processed_total\{result="(\w+)"\} (\S+)$', re.MULTILINE)


@dataclass
class Rig:
    store: BlobStore
    queue: KafkaJobQueue
    kafka: Kafka
    env: dict[str, str]
    logs: Path
    bootstrap: str
    processes: list[PinholeProcess]

    def start_transcoder(self) -> PinholeProcess:
        process = start_pinhole("transcode", self.env, self.logs)
        self.processes.append(process)
        return process


@pytest.fixture
async def rig(
    tansu: TansuBroker, moto_s3: MotoS3, unique_name: str, tmp_path: Path
) -> AsyncIterator[Rig]:
    name = unique_name.replace("_", "-")[:50]
    kafka = Kafka(
        jobs_topic=f"{name}.jobs",
        events_topic=f"{name}.events",
        dead_letter_topic=f"{name}.dlq",
        consumer_group=f"{name}-transcoder",
        partitions=PARTITIONS,
        session_timeout_ms=SESSION_MS,
    )
    storage = moto_s3.url(name)
    env = {
        "PINHOLE_STORAGE": storage,
        "PINHOLE_QUEUE": tansu.url,
        "PINHOLE_KAFKA__JOBS_TOPIC": kafka.jobs_topic,
        "PINHOLE_KAFKA__EVENTS_TOPIC": kafka.events_topic,
        "PINHOLE_KAFKA__DEAD_LETTER_TOPIC": kafka.dead_letter_topic,
        "PINHOLE_KAFKA__CONSUMER_GROUP": kafka.consumer_group,
        "PINHOLE_KAFKA__PARTITIONS": str(PARTITIONS),
        "PINHOLE_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_MS),
        "PINHOLE_TRANSCODE__AVIF_EFFORT": "0",
        "PINHOLE_TRANSCODE__WEBP_EFFORT": "0",
        # Several jobs of one partition in hand at once, as in production.
        "PINHOLE_TRANSCODE__MAX_IN_FLIGHT": "4",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    store = build_blob_store(storage)
    queue = KafkaJobQueue.from_url(tansu.url, kafka, session_timeout_ms=SESSION_MS)
    await queue.start()
    logs = tmp_path / "logs"
    logs.mkdir()
    rig = Rig(store, queue, kafka, env, logs, tansu.bootstrap, [])
    try:
        yield rig
    finally:
        for process in rig.processes:
            process.stop()
        await queue.close()
        await store.close()


def _jpeg() -> bytes:
    data: bytes = pyvips.Image.xyz(320, 200)[0].cast("uchar").write_to_buffer(".jpg", Q=90)
    return data


async def _enqueue(rig: Rig, data: bytes, copies: int) -> ImageId:
    """What ingest does for an accepted upload (original, pending manifest, job),
    with the job published ``copies`` times."""
    image_id = image_id_for_bytes(data)
    source = SourceInfo(format="jpeg", width=320, height=200, bytes=len(data), has_alpha=False)
    await rig.store.put(original_key(image_id), data, content_type="image/jpeg", if_absent=True)
    now = time.time()
    pending = Manifest(
        id=image_id, status=Status.PENDING, source=source, created_at=now, updated_at=now
    )
    await save_manifest(rig.store, pending, if_absent=True)
    job = TranscodeJob(
        image_id=image_id,
        original_key=original_key(image_id),
        source=source,
        submitted_at=now,
        request_id=f"dup-{image_id[:8]}",
    )
    for _ in range(copies):
        await publish_job(rig.queue, rig.kafka, job)
    return image_id


async def _wait_committed(rig: Rig, total: int, within_seconds: float = 120.0) -> None:
    """Until the group has committed ``total`` jobs: every job handled, duplicates too."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=rig.bootstrap, group_id=rig.kafka.consumer_group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + within_seconds
        while True:
            committed = 0
            for p in range(PARTITIONS):
                committed += await consumer.committed(TopicPartition(rig.kafka.jobs_topic, p)) or 0
            if committed >= total:
                return
            for process in rig.processes:
                assert process.proc.poll() is None, process.log_tail()
            assert time.monotonic() < deadline, (committed, rig.processes[0].log_tail(30))
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


async def _processed(process: PinholeProcess) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{process.url}/metrics") as resp,
    ):
        text = await resp.text()
    return {result: float(value) for result, value in _PROCESSED.findall(text)}


async def _dead_letters(rig: Rig) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=rig.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(rig.kafka.dead_letter_topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: list[bytes] = []
        async with asyncio.timeout(20):
            while sum(ends.values()) > len(out):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(r.value or b"" for r in records)
        return out
    finally:
        await consumer.stop()


async def test_duplicate_jobs_render_once_and_count_as_skipped(rig: Rig) -> None:
    image_id = await _enqueue(rig, _jpeg(), copies=5)
    worker = rig.start_transcoder()
    await _wait_committed(rig, 5)
    manifest = await load_manifest(rig.store, image_id)
    assert manifest is not None
    assert manifest.status is Status.READY
    assert rendered(worker) == [image_id]
    counts = await _processed(worker)
    assert counts.get("ready") == 1, counts
    assert counts.get("skipped") == 4, counts
    assert counts.get("failed", 0) == 0, counts


async def test_an_undecodable_image_is_dead_lettered_once_for_two_jobs(rig: Rig) -> None:
    whole = _jpeg()
    broken = whole[: len(whole) // 2]  # sniffs as JPEG, cannot decode
    image_id = await _enqueue(rig, broken, copies=2)
    worker = rig.start_transcoder()
    await _wait_committed(rig, 2)
    manifest = await load_manifest(rig.store, image_id)
    assert manifest is not None
    assert manifest.status is Status.FAILED
    assert manifest.failure is not None
    assert manifest.failure.code == "undecodable-image"
    dead = await _dead_letters(rig)
    assert [TranscodeJob.decode(v).image_id for v in dead] == [image_id]
    counts = await _processed(worker)
    assert counts.get("failed") == 1, counts
    assert counts.get("skipped") == 1, counts
