"""``DELETE /v1/images/{id}``: every stored byte, every cache tier, then the purge event.

``pinhole up`` runs against real services: S3 (moto), Kafka (tansu) and Redis
as the shared L2 cache, with its edge L1 in the same process.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import aiohttp.test_utils as aiohttp_test
import pyvips
import redis.asyncio as aioredis
from yarl import URL

from ingest.auth import token_digest
from ingest.delete import variant_keys
from pinhole.app.runtime import build_up_app
from pinhole.app.wiring import build_blob_store, build_job_queue
from pinhole.domain.ids import ImageId
from pinhole.domain.keys import manifest_key, original_key, pending_key
from pinhole.ports import Subscription
from pinhole.settings import Auth, Cache, Kafka, Settings
from server.app import EDGE_KEY
from tests.support.apps import PinholeTestServer
from tests.support.services import MotoS3, RedisServer, TansuBroker

TOKEN = "delete-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _image() -> bytes:
    """Bytes no other suite uploads: the Redis server is shared by the session."""
    image = pyvips.Image.xyz(120, 90)[0].cast("uchar").bandjoin([40, 200])
    data: bytes = image.write_to_buffer(".png")
    return data


async def _upload_and_wait_ready(
    session: aiohttp.ClientSession, up: aiohttp_test.TestServer, data: bytes
) -> dict[str, Any]:
    headers = {**AUTH, "Content-Type": "image/png"}
    async with session.post(up.make_url("/v1/images"), data=data, headers=headers) as r:
        assert r.status == 202, await r.text()
        image_id = (await r.json())["id"]
    async with asyncio.timeout(120):
        while True:
            async with session.get(up.make_url(f"/v1/images/{image_id}")) as r:
                manifest: dict[str, Any] = await r.json()
            if manifest["status"] != "pending":
                assert manifest["status"] == "ready", manifest
                return manifest
            await asyncio.sleep(0.2)


def _paths(manifest: dict[str, Any]) -> list[str]:
    """Edge paths of every variant, and of the Accept-negotiated URLs."""
    urls = [v["url"] for v in manifest["variants"]] + list(manifest["urls"].values())
    return [URL(url).path for url in urls]


async def _deleted_event(subscription: Subscription, image_id: ImageId) -> dict[str, Any]:
    async with asyncio.timeout(60):
        async for delivery in subscription:
            await delivery.ack()
            event: dict[str, Any] = json.loads(delivery.message.value)
            if event["type"] == "image.deleted" and event["id"] == image_id:
                return event
    raise AssertionError("the events topic ended")


async def test_delete_removes_the_image_everywhere_and_it_can_come_back(
    moto_s3: MotoS3, tansu: TansuBroker, redis_server: RedisServer, unique_name: str
) -> None:
    settings = Settings(
        storage=moto_s3.url(unique_name),
        queue=tansu.url,
        cache=redis_server.url,
        # A delete whose Redis DEL misses the timeout queues the purge as a
        # marker (tests/faults/test_delete_redis_down.py); this test is about what
        # a delete removes with Redis answering, so the timeout is generous.
        hot_cache=Cache(timeout_seconds=5.0),
        auth=Auth(token_sha256=[token_digest(TOKEN)]),
        kafka=Kafka(
            jobs_topic=f"{unique_name}.jobs",
            events_topic=f"{unique_name}.events",
            dead_letter_topic=f"{unique_name}.dlq",
            partitions=1,
            session_timeout_ms=3_000,
        ),
    )
    store = build_blob_store(settings.storage)
    redis = aioredis.Redis.from_url(redis_server.url)
    events = build_job_queue(settings.queue, settings.kafka)
    data = _image()
    try:
        await events.start()
        subscription = await events.subscribe(settings.kafka.events_topic, f"{unique_name}-test")
        up = PinholeTestServer(build_up_app(settings))
        async with up, aiohttp.ClientSession() as session:
            manifest = await _upload_and_wait_ready(session, up, data)
            image_id = ImageId(manifest["id"])
            keys = variant_keys(image_id)
            # Serve every variant so the L1 and Redis tiers hold them.
            for path in _paths(manifest):
                async with session.get(up.make_url(path)) as r:
                    assert r.status == 200, path
            assert await redis.exists(*keys) > 0
            l1 = up.app[EDGE_KEY].tiers.l1
            assert any(l1.get_nowait(key) is not None for key in keys)

            url = up.make_url(f"/v1/images/{image_id}")
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with session.delete(url, headers=headers) as r:
                    assert r.status == 401
                    assert (await r.json())["error"]["code"] == "unauthorized"
            async with session.delete(url, headers=AUTH) as r:
                assert r.status == 204, await r.text()

            for key in (original_key(image_id), manifest_key(image_id), pending_key(image_id)):
                assert await store.head(key) is None, key
            for key in keys:
                assert await store.head(key) is None, key
            assert await redis.exists(*keys) == 0
            assert all(l1.get_nowait(key) is None for key in keys)

            async with session.get(url) as r:
                assert r.status == 404
            for path in _paths(manifest):
                async with session.get(up.make_url(path)) as r:
                    assert r.status == 404, path  # not even from the in-process L1
            async with session.delete(url, headers=AUTH) as r:
                assert r.status == 404

            event = await _deleted_event(subscription, image_id)
            assert event["surrogate_key"] == f"img-{image_id}"

            # The same bytes again: a new upload, not a duplicate of a ghost.
            again = await _upload_and_wait_ready(session, up, data)
            assert again["id"] == image_id
            for path in _paths(again)[:3]:
                async with session.get(up.make_url(path)) as r:
                    assert r.status == 200, path
    finally:
        await events.close()
        await redis.aclose()
        await store.close()
