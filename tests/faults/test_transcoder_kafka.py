"""Transcoder processes on a real Kafka-protocol broker (tansu) and a real S3
server (moto): kill -9 mid-run, two workers in one group, a poison image,
SIGTERM. Jobs are enqueued in-process exactly as ingest does it (original,
pending manifest, then the job); transcoders are real OS processes.

Renders are counted from the workers' JSON log lines ("image ready" is logged
once per job rendered to completion; a redelivered job whose manifest is
already ready is skipped and logs "already processed").
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pyvips
from aiokafka import AIOKafkaConsumer, TopicPartition

from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import ImageId, image_id_for_bytes
from pinhole.domain.job import SourceInfo, TranscodeJob
from pinhole.domain.keys import original_key, variant_key
from pinhole.domain.ladder import PRESETS_BY_NAME, Format
from pinhole.domain.manifest import Manifest, Status
from pinhole.jobs import publish_job
from pinhole.manifests import load_manifest, save_manifest
from pinhole.ports import BlobStore
from pinhole.queue.kafka import KafkaJobQueue
from pinhole.settings import Kafka
from tests.support.photos import photo_path
from tests.support.processes import PinholeProcess, start_pinhole
from tests.support.services import MotoS3, TansuBroker
from tests.support.workers import rendered, wait_for_assignment

pytestmark = pytest.mark.slow

PARTITIONS = 4
SESSION_MS = 3000
DEADLINE_SECONDS = 120.0


@dataclass
class Rig:
    name: str
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
        # Cheap encodes: these tests are about delivery, not pictures.
        "PINHOLE_TRANSCODE__AVIF_EFFORT": "0",
        "PINHOLE_TRANSCODE__WEBP_EFFORT": "0",
        "PINHOLE_TRANSCODE__MAX_IN_FLIGHT": "2",
        "PINHOLE_TRANSCODE__RENDER_THREADS": "1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    store = build_blob_store(storage)
    queue = KafkaJobQueue.from_url(tansu.url, kafka, session_timeout_ms=SESSION_MS)
    await queue.start()
    logs = tmp_path / "logs"
    logs.mkdir()
    rig = Rig(name, store, queue, kafka, env, logs, tansu.bootstrap, [])
    try:
        yield rig
    finally:
        for process in rig.processes:
            if process.proc.poll() is None:
                process.proc.kill()
                process.proc.wait()
        await queue.close()
        await store.close()


def _images(count: int, seed: int) -> list[bytes]:
    """Distinct small JPEGs cut from a real photo (distinct bytes, distinct ids)."""
    photo = pyvips.Image.thumbnail(str(photo_path("autumn-2560x1600.jpg")), 1300).copy_memory()
    out = []
    for i in range(count):
        x = (i * 37 + seed * 11) % (photo.width - 600)
        y = (i * 23 + seed * 7) % (photo.height - 400)
        out.append(photo.crop(x, y, 600, 400).write_to_buffer(".jpg", Q=85))
    return out


async def _enqueue(rig: Rig, data: bytes) -> ImageId:
    """What ingest does for an accepted upload: original, pending manifest, job."""
    image_id = image_id_for_bytes(data)
    header = pyvips.Image.new_from_buffer(data, "")
    source = SourceInfo(
        format="jpeg",
        width=header.width,
        height=header.height,
        bytes=len(data),
        has_alpha=bool(header.hasalpha()),
    )
    key = original_key(image_id)
    await rig.store.put(key, data, content_type="image/jpeg", if_absent=True)
    now = time.time()
    pending = Manifest(
        id=image_id, status=Status.PENDING, source=source, created_at=now, updated_at=now
    )
    await save_manifest(rig.store, pending, if_absent=True)
    job = TranscodeJob(
        image_id=image_id,
        original_key=key,
        source=source,
        submitted_at=now,
        request_id=f"req-{image_id[:8]}",
    )
    await publish_job(rig.queue, rig.kafka, job)
    return image_id


async def _statuses(rig: Rig, ids: list[ImageId]) -> dict[ImageId, Manifest | None]:
    manifests = await asyncio.gather(*(load_manifest(rig.store, i) for i in ids))
    return dict(zip(ids, manifests, strict=True))


async def _wait_for(
    rig: Rig, ids: list[ImageId], done: Callable[[dict[ImageId, Manifest | None]], bool]
) -> dict[ImageId, Manifest | None]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        current = await _statuses(rig, ids)
        if done(current):
            return current
        for process in rig.processes:
            if process.proc.returncode is None and process.proc.poll() is not None:
                raise AssertionError(f"transcoder died:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            counts = Counter(m.status.value if m else "missing" for m in current.values())
            tails = "\n---\n".join(p.log_tail(15) for p in rig.processes)
            raise AssertionError(f"timed out with {dict(counts)}\n{tails}")
        await asyncio.sleep(0.5)


def _ready(manifests: dict[ImageId, Manifest | None]) -> int:
    return sum(1 for m in manifests.values() if m is not None and m.status is Status.READY)


def _all_ready(manifests: dict[ImageId, Manifest | None]) -> bool:
    return _ready(manifests) == len(manifests)


async def _assert_every_variant_at_its_key(
    rig: Rig, manifests: dict[ImageId, Manifest | None]
) -> None:
    expected_keys: set[str] = set()
    for image_id, manifest in manifests.items():
        assert manifest is not None
        assert manifest.status is Status.READY
        assert len(manifest.variants) == 15
        for v in manifest.variants:
            key = variant_key(PRESETS_BY_NAME[v.preset], image_id, v.format)
            expected_keys.add(key)
            info = await rig.store.head(key)
            assert info is not None, key
            assert info.size == v.bytes, key
    # Nothing anywhere else under variants/: each variant exactly at its key.
    stored = {info.key async for info in rig.store.list("variants/")}
    assert stored == expected_keys


async def _topic_messages(rig: Rig, topic: str) -> list[tuple[bytes, dict[str, str]]]:
    """Everything on ``topic`` so far, read without a group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=rig.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: list[tuple[bytes, dict[str, str]]] = []
        remaining = {tp for tp in partitions if ends[tp] > 0}
        deadline = time.monotonic() + 20
        while remaining and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    headers = {k: (v or b"").decode() for k, v in r.headers}
                    out.append((r.value or b"", headers))
                    if r.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def _committed_total(rig: Rig) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=rig.bootstrap,
        group_id=rig.kafka.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        total = 0
        for p in range(PARTITIONS):
            committed = await consumer.committed(TopicPartition(rig.kafka.jobs_topic, p))
            total += committed or 0
        return total
    finally:
        await consumer.stop()


async def test_kill_9_mid_run_then_a_new_worker_finishes_every_image(rig: Rig) -> None:
    first = rig.start_transcoder()
    ids = [await _enqueue(rig, data) for data in _images(30, seed=1)]
    assert len(set(ids)) == 30
    # Some done, most not: kill the worker without any chance to clean up.
    await _wait_for(rig, ids, lambda m: _ready(m) >= 3)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    at_kill = await _statuses(rig, ids)
    ready_at_kill = {i for i, m in at_kill.items() if m is not None and m.status is Status.READY}
    assert len(ready_at_kill) < 30, "the kill came too late to test anything"

    second = rig.start_transcoder()
    manifests = await _wait_for(rig, ids, _all_ready)
    await _assert_every_variant_at_its_key(rig, manifests)
    # Exactly what the dead worker had not finished, the new one rendered; what
    # it had finished is skipped even if its offset was never committed. (The
    # dead worker's own log may have lost its last lines with the process.)
    assert set(rendered(second)) == set(ids) - ready_at_kill
    assert second.stop() == 0, second.log_tail()


async def test_two_workers_share_the_partitions_and_render_each_image_once(rig: Rig) -> None:
    workers = [rig.start_transcoder(), rig.start_transcoder()]
    # Let the group settle first: during a rebalance at-least-once may
    # legitimately render a job twice, which is not what this test is about.
    await wait_for_assignment(workers, PARTITIONS)
    ids = [await _enqueue(rig, data) for data in _images(40, seed=2)]
    assert len(set(ids)) == 40
    manifests = await _wait_for(rig, ids, _all_ready)
    await _assert_every_variant_at_its_key(rig, manifests)
    counts = [Counter(rendered(w)) for w in workers]
    total = counts[0] + counts[1]
    assert set(total) == set(ids)
    assert max(total.values()) == 1, [i for i, n in total.items() if n > 1]
    assert all(sum(c.values()) > 0 for c in counts), "one worker did everything"
    for worker in workers:
        assert worker.stop() == 0, worker.log_tail()


async def test_a_poison_image_is_dead_lettered_once_and_the_rest_flow(rig: Rig) -> None:
    worker = rig.start_transcoder()
    good = _images(6, seed=3)
    broken = good[0][: len(good[0]) // 2]  # a JPEG cut in half: sniffs fine, cannot decode
    ids = [await _enqueue(rig, broken)]
    ids += [await _enqueue(rig, data) for data in good[1:]]
    poison = ids[0]
    manifests = await _wait_for(
        rig,
        ids,
        lambda m: all(x is not None and x.status is not Status.PENDING for x in m.values()),
    )
    failed = manifests[poison]
    assert failed is not None
    assert failed.status is Status.FAILED
    assert failed.failure is not None
    assert failed.failure.code == "undecodable-image"
    assert all(
        m is not None and m.status is Status.READY for i, m in manifests.items() if i != poison
    )

    dead = await _topic_messages(rig, rig.kafka.dead_letter_topic)
    assert len(dead) == 1
    value, headers = dead[0]
    assert TranscodeJob.decode(value).image_id == poison
    assert headers["reason"] == "undecodable-image"
    assert headers["reason-message"]

    events = [json.loads(v) for v, _ in await _topic_messages(rig, rig.kafka.events_topic)]
    kinds = Counter((e["type"], e["id"]) for e in events)
    assert kinds[("image.failed", poison)] == 1
    for image_id in ids[1:]:
        assert kinds[("image.ready", image_id)] == 1
    failed_event = next(e for e in events if e["type"] == "image.failed")
    assert failed_event["reason"] == "undecodable-image"
    assert worker.stop() == 0, worker.log_tail()


async def test_sigterm_finishes_jobs_in_flight_commits_and_exits_0(rig: Rig) -> None:
    worker = rig.start_transcoder()
    ids = [await _enqueue(rig, data) for data in _images(16, seed=4)]
    await _wait_for(rig, ids, lambda m: _ready(m) >= 2)
    os.kill(worker.proc.pid, signal.SIGTERM)
    assert worker.proc.wait(timeout=40) == 0, worker.log_tail()
    log_text = worker.log_path.read_text()
    assert "Traceback" not in log_text
    assert "transcoder stopped" in log_text
    # Every job it took was finished (no half-rendered image) and committed:
    # the group's committed offsets count exactly the images it made ready.
    manifests = await _statuses(rig, ids)
    ready_now = _ready(manifests)
    assert sorted(rendered(worker)) == sorted(
        i for i, m in manifests.items() if m and m.status is Status.READY
    )
    assert await _committed_total(rig) == ready_now
    for image_id, manifest in manifests.items():
        if manifest is not None and manifest.status is Status.PENDING:
            # Not started: no variant written for it.
            assert (
                await rig.store.head(variant_key(PRESETS_BY_NAME["236x"], image_id, Format.JPEG))
                is None
            )
    # A successor picks up exactly where it stopped.
    successor = rig.start_transcoder()
    await _wait_for(rig, ids, _all_ready)
    assert set(rendered(successor)) == {
        i for i, m in manifests.items() if m and m.status is Status.PENDING
    }
    assert successor.stop() == 0, successor.log_tail()
