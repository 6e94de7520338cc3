"""No accepted upload is ever lost, even when the broker loses every message.

Real services throughout: a Kafka-protocol broker (tansu, memory storage, so
a restart really loses its log), an S3-protocol server (moto), the ingest app,
``pinhole reconcile`` as a real command, and a real transcoder.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pyvips
from yarl import URL

from ingest.app import SLOTS_KEY
from pinhole.app.reconcile import reconcile
from pinhole.app.runtime import build_ingest_app, build_transcoder_app, build_up_app
from pinhole.app.wiring import build_blob_store, build_job_queue
from pinhole.domain.ids import ImageId, image_id_for_bytes
from pinhole.domain.keys import PENDING_PREFIX
from pinhole.domain.manifest import Status
from pinhole.manifests import load_manifest
from pinhole.ports import BlobStore
from pinhole.settings import Auth, Kafka, Settings
from tests.support.apps import PinholeTestServer
from tests.support.services import MotoS3, free_port, start_tansu

JPEG = {"Content-Type": "image/jpeg"}


def _jpeg(seed: int) -> bytes:
    data: bytes = (pyvips.Image.black(96, 64) + seed).cast("uchar").write_to_buffer(".jpg")
    return data


async def _wait_ready(store: BlobStore, ids: set[ImageId], seconds: float = 180.0) -> None:
    async with asyncio.timeout(seconds):
        waiting = set(ids)
        while waiting:
            for image_id in list(waiting):
                manifest = await load_manifest(store, image_id)
                assert manifest is not None, image_id
                assert manifest.status is not Status.FAILED, manifest.failure
                if manifest.status is Status.READY:
                    waiting.discard(image_id)
            await asyncio.sleep(0.25)


def _reconcile_command(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PINHOLE_STORAGE": settings.storage,
        "PINHOLE_QUEUE": settings.queue,
        "PINHOLE_KAFKA__JOBS_TOPIC": settings.kafka.jobs_topic,
        "PINHOLE_KAFKA__EVENTS_TOPIC": settings.kafka.events_topic,
        "PINHOLE_KAFKA__DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
        "PINHOLE_KAFKA__PARTITIONS": str(settings.kafka.partitions),
    }
    return subprocess.run(
        [sys.executable, "-m", "pinhole.app.cli", "reconcile", "--older-than", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_broker_lost_mid_upload_and_restarted_empty_every_upload_ends_ready(
    moto_s3: MotoS3, unique_name: str
) -> None:
    port = free_port()
    broker = start_tansu(port)
    settings = Settings(
        storage=moto_s3.url(unique_name),
        queue=broker.url,
        cache="memory://",
        auth=Auth(allow_anonymous=True),
        # The transcoder's own reconcile at start must not do this test's work.
        reconcile_after_seconds=3600,
        kafka=Kafka(
            jobs_topic=f"{unique_name}.jobs",
            events_topic=f"{unique_name}.events",
            dead_letter_topic=f"{unique_name}.dlq",
            partitions=2,
            session_timeout_ms=3_000,
        ),
    )
    store = build_blob_store(settings.storage)
    accepted: set[ImageId] = set()
    try:
        ingest = PinholeTestServer(build_ingest_app(settings))
        async with ingest, aiohttp.ClientSession() as session:
            url = ingest.make_url("/v1/images")
            # Accepted while the broker is up: the jobs live only in its memory.
            for seed in (1, 2):
                async with session.post(url, data=_jpeg(seed), headers=JPEG) as r:
                    assert r.status == 202, await r.text()
                    accepted.add((await r.json())["id"])

            # The broker dies while an upload is on the wire.
            data = _jpeg(3)
            resume = asyncio.Event()

            async def halted_body() -> AsyncIterator[bytes]:
                yield data[:200]
                await resume.wait()
                yield data[200:]

            mid_stream = asyncio.ensure_future(session.post(url, data=halted_body(), headers=JPEG))
            async with asyncio.timeout(30):
                while ingest.app[SLOTS_KEY].in_use == 0:  # noqa: ASYNC110 - the server's counter
                    await asyncio.sleep(0.02)
            broker.stop()
            resume.set()
            async with await mid_stream as r:
                body = await r.json()
                assert r.status == 503, body
                assert body["error"]["code"] == "service-unavailable"
                assert int(r.headers["Retry-After"]) > 0
            accepted.add(image_id_for_bytes(data))

        # Every accepted upload has its durable pending record.
        for image_id in accepted:
            manifest = await load_manifest(store, image_id)
            assert manifest is not None, image_id
            assert manifest.status is Status.PENDING, image_id

        # A new, empty broker on the same port: every job published so far is gone.
        broker = start_tansu(port)
        done = _reconcile_command(settings)
        assert done.returncode == 0, done.stderr
        assert "requeued 3," in done.stdout, done.stdout
        assert "reconcile [" in done.stderr or "reconcile:" in done.stderr, done.stderr

        async with PinholeTestServer(build_transcoder_app(settings)):
            await _wait_ready(store, accepted)

        # Done images leave the pending index on the next pass.
        queue = build_job_queue(settings.queue, settings.kafka)
        try:
            report = await reconcile(store, queue, settings.kafka, older_than_seconds=0)
        finally:
            await queue.close()
        assert (report.cleaned, report.requeued) == (3, 0)
        assert [info.key async for info in store.list(PENDING_PREFIX)] == []
    finally:
        broker.stop()
        await store.close()


async def test_up_reenqueues_uploads_its_previous_run_left_pending(tmp_path: Path) -> None:
    settings = Settings(
        storage=f"file://{tmp_path / 'store'}",
        queue="memory://",
        cache="memory://",
        auth=Auth(allow_anonymous=True),
    )
    data = _jpeg(5)
    # A previous run accepted the upload, then stopped before transcoding it;
    # its in-process queue, and the job in it, died with it.
    async with (
        PinholeTestServer(build_ingest_app(settings)) as ingest,
        aiohttp.ClientSession() as session,
        session.post(ingest.make_url("/v1/images"), data=data, headers=JPEG) as r,
    ):
        assert r.status == 202, await r.text()
    image_id = image_id_for_bytes(data)

    async with (
        PinholeTestServer(build_up_app(settings)) as up,
        aiohttp.ClientSession() as session,
    ):
        async with asyncio.timeout(120):
            while True:
                async with session.get(up.make_url(f"/v1/images/{image_id}")) as r:
                    manifest = await r.json()
                if manifest["status"] == "ready":
                    break
                await asyncio.sleep(0.2)
        variant_path = URL(manifest["variants"][0]["url"]).path
        async with session.get(up.make_url(variant_path)) as r:
            assert r.status == 200
