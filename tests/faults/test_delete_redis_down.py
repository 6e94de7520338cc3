"""An erasure does not depend on a cache: DELETE with Redis unreachable.

Real processes on real services: ``pinhole ingest``, ``pinhole transcode`` and
``pinhole serve`` on tansu, moto and a Redis of this test's own. Redis is
paused (SIGSTOP: connections hang, as in a network split, and its data
survives) while an image it holds is deleted. The delete must answer 204 and
remove the blobs and the manifest; the edge must stop serving the image (the
``image.deleted`` event drops its L1); and once Redis answers again the
queued purge must drop the image's entries from it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips
import redis.asyncio as aioredis

from ingest.auth import token_digest
from ingest.delete import variant_keys
from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import ImageId
from pinhole.domain.keys import PURGE_PREFIX, manifest_key, original_key
from pinhole.ports import BlobStore
from tests.support.pipeline import wait_ready
from tests.support.processes import PinholeProcess, start_pinhole, wait_for_log
from tests.support.services import MotoS3, RedisServer, TansuBroker, free_port, start_redis

pytestmark = pytest.mark.slow

TOKEN = "delete-redis-down"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Rig:
    store: BlobStore
    redis: RedisServer
    ingest: PinholeProcess
    edge: PinholeProcess


@pytest.fixture
async def rig(
    tansu: TansuBroker, moto_s3: MotoS3, unique_name: str, tmp_path: Path
) -> AsyncIterator[Rig]:
    name = unique_name.replace("_", "-")[:50]
    redis = start_redis()
    ingest_port, edge_port = free_port(), free_port()
    storage = moto_s3.url(name)
    env = {
        "PINHOLE_STORAGE": storage,
        "PINHOLE_QUEUE": tansu.url,
        "PINHOLE_CACHE": redis.url,
        "PINHOLE_PUBLIC_URL": f"http://127.0.0.1:{edge_port}",
        "PINHOLE_INGEST_URL": f"http://127.0.0.1:{ingest_port}",
        "PINHOLE_AUTH__TOKEN_SHA256": f'["{token_digest(TOKEN)}"]',
        "PINHOLE_KAFKA__JOBS_TOPIC": f"{name}.jobs",
        "PINHOLE_KAFKA__EVENTS_TOPIC": f"{name}.events",
        "PINHOLE_KAFKA__DEAD_LETTER_TOPIC": f"{name}.dlq",
        "PINHOLE_KAFKA__CONSUMER_GROUP": f"{name}-transcoder",
        "PINHOLE_KAFKA__PARTITIONS": "1",
        "PINHOLE_KAFKA__SESSION_TIMEOUT_MS": "3000",
        "PINHOLE_HOT_CACHE__PURGE_RETRY_SECONDS": "1",
        "PINHOLE_TRANSCODE__AVIF_EFFORT": "0",
        "PINHOLE_TRANSCODE__WEBP_EFFORT": "0",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    started: list[PinholeProcess] = []
    store = build_blob_store(storage)
    try:
        started.append(start_pinhole("ingest", env, logs, port=ingest_port))
        started.append(start_pinhole("transcode", env, logs))
        started.append(start_pinhole("serve", env, logs, port=edge_port))
        await wait_for_log(started[2], "listening for deletes")
        yield Rig(store, redis, started[0], started[2])
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        for process in started:
            process.stop()
        redis.stop()
        await store.close()


def _png() -> bytes:
    image = pyvips.Image.xyz(200, 150)[1].cast("uchar").bandjoin([90, 30])
    data: bytes = image.write_to_buffer(".png")
    return data


async def _upload_ready(session: aiohttp.ClientSession, rig: Rig) -> dict[str, Any]:
    headers = {**AUTH, "Content-Type": "image/png"}
    async with session.post(f"{rig.ingest.url}/v1/images", data=_png(), headers=headers) as r:
        assert r.status == 202, await r.text()
        status_url = (await r.json())["status_url"]
    manifest = await wait_ready(session, status_url, within_seconds=120)
    assert manifest["status"] == "ready", manifest
    return manifest


async def test_delete_with_redis_down_answers_204_and_purges_redis_once_it_is_back(
    rig: Rig,
) -> None:
    client = aioredis.Redis.from_url(rig.redis.url)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            manifest = await _upload_ready(session, rig)
            image_id = ImageId(manifest["id"])
            urls = [v["url"] for v in manifest["variants"]]
            for url in urls:
                async with session.get(url) as r:
                    assert r.status == 200, url
            keys = variant_keys(image_id)
            cached = await client.exists(*keys)
            assert cached > 0, "the edge cached nothing in Redis"

            os.kill(rig.redis.proc.pid, signal.SIGSTOP)  # hangs every connection
            async with session.delete(f"{rig.ingest.url}/v1/images/{image_id}", headers=AUTH) as r:
                assert r.status == 204, await r.text()
            for key in (original_key(image_id), manifest_key(image_id), *keys):
                assert await rig.store.head(key) is None, key
            async with session.get(f"{rig.ingest.url}/v1/images/{image_id}") as r:
                assert r.status == 404
            # image.deleted went out: the edge drops its L1 and serves the image no more.
            async with asyncio.timeout(30):
                for url in urls:
                    while True:
                        async with session.get(url) as r:
                            if r.status == 404:
                                break
                        await asyncio.sleep(0.2)
            queued = [info.key async for info in rig.store.list(PURGE_PREFIX)]
            assert len(queued) == 1, queued

            os.kill(rig.redis.proc.pid, signal.SIGCONT)  # back, with its data
            deadline = time.monotonic() + 30
            while await client.exists(*keys):
                assert time.monotonic() < deadline, "Redis still holds the deleted variants"
                await asyncio.sleep(0.2)
            # The marker goes right after the purge it queued.
            deadline = time.monotonic() + 10
            while queued := [info.key async for info in rig.store.list(PURGE_PREFIX)]:
                assert time.monotonic() < deadline, queued
                await asyncio.sleep(0.2)
    finally:
        await client.aclose()
