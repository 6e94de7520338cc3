"""A hung S3 (issue #20, item 3): connections accepted, nothing ever answered.

Real processes (``pinhole ingest``, ``transcode``, ``serve``) against tansu,
Redis and moto, with moto behind a proxy the test switches to black-hole every
connection. While it hangs: /readyz of every role answers within about a second
(the edge stays ready and says storage is degraded), an upload, a status read
and an uncached edge read each get 503 with Retry-After in bounded time, and
the edge keeps serving what it has cached. When the proxy passes again every
role recovers by itself, and every accepted upload ends ready.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips

from ingest.auth import token_digest
from tests.support.fault_proxy import FaultProxy, fault_proxy
from tests.support.processes import PinholeProcess, stack_env, start_pinhole
from tests.support.services import MotoS3, RedisServer, TansuBroker, free_port

pytestmark = pytest.mark.slow

TOKEN = "hung-storage-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# /readyz answers within about a second whatever hangs; before the fix, 42-46 s.
READYZ_WITHIN = 3.0
# A request that needs the hung store gets its 503 in bounded time.
ANSWER_WITHIN = 10.0
HEALS_WITHIN = 60.0
READY_WITHIN = 120.0


def _jpeg(seed: int) -> bytes:
    image = (pyvips.Image.black(96, 64) + seed).cast("uchar")
    data: bytes = image.write_to_buffer(".jpg", Q=90)
    return data


@dataclass
class Stack:
    s3: FaultProxy
    ingest: PinholeProcess
    transcode: PinholeProcess
    edge: PinholeProcess

    @property
    def roles(self) -> tuple[PinholeProcess, ...]:
        return (self.ingest, self.transcode, self.edge)


@pytest.fixture
def stack(
    tmp_path: Path,
    unique_name: str,
    moto_s3: MotoS3,
    tansu: TansuBroker,
    redis_server: RedisServer,
) -> Iterator[Stack]:
    with fault_proxy(moto_s3.port) as s3:
        ingest_port, edge_port = free_port(), free_port()
        env = stack_env(
            storage=moto_s3.url(unique_name).replace(moto_s3.endpoint, s3.endpoint),
            queue=tansu.url,
            cache=redis_server.isolated_url(),
            ingest_port=ingest_port,
            edge_port=edge_port,
            token_sha256=token_digest(TOKEN),
            topic_prefix=unique_name,
            partitions=2,
        )
        env["PINHOLE_KAFKA__CONSUMER_GROUP"] = f"{unique_name}-transcoder"
        env["PINHOLE_KAFKA__SESSION_TIMEOUT_MS"] = "3000"
        started: list[PinholeProcess] = []
        try:
            for role, port in (("ingest", ingest_port), ("transcode", None), ("serve", edge_port)):
                started.append(start_pinhole(role, env, tmp_path, port=port))
            yield Stack(s3, *started)
        finally:
            for process in started:
                process.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


async def _readyz(client: aiohttp.ClientSession, process: PinholeProcess) -> tuple[int, Any]:
    async with asyncio.timeout(READYZ_WITHIN), client.get(f"{process.url}/readyz") as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def _ready_within(client: aiohttp.ClientSession, process: PinholeProcess) -> None:
    deadline = time.monotonic() + HEALS_WITHIN
    while True:
        status, body = await _readyz(client, process)
        if status == 200 and body["status"] == "ok":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{process.role} not ready: {body}\n{process.log_tail()}")
        await asyncio.sleep(0.25)


async def _upload(client: aiohttp.ClientSession, stack: Stack, data: bytes) -> tuple[int, Any, str]:
    headers = {**AUTH, "Content-Type": "image/jpeg"}
    async with (
        asyncio.timeout(ANSWER_WITHIN),
        client.post(f"{stack.ingest.url}/v1/images", data=data, headers=headers) as resp,
    ):
        return resp.status, await resp.json(), resp.headers.get("Retry-After", "")


async def _wait_ready(client: aiohttp.ClientSession, stack: Stack, image_id: str) -> Any:
    deadline = time.monotonic() + READY_WITHIN
    while True:
        async with client.get(f"{stack.ingest.url}/v1/images/{image_id}") as resp:
            assert resp.status == 200, await resp.text()
            manifest = await resp.json()
        if manifest["status"] != "pending":
            assert manifest["status"] == "ready", manifest
            return manifest
        assert time.monotonic() < deadline, f"{image_id} still pending"
        await asyncio.sleep(0.25)


async def _get(client: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    async with asyncio.timeout(ANSWER_WITHIN), client.get(url) as resp:
        return resp.status, await resp.read(), resp.headers.get("Retry-After", "")


def _variant(manifest: Any, preset: str, fmt: str) -> str:
    url: str = next(
        v["url"] for v in manifest["variants"] if v["preset"] == preset and v["format"] == fmt
    )
    return url


def _assert_unavailable(status: int, body: Any, retry_after: str) -> None:
    assert status == 503, body
    if isinstance(body, dict):
        assert body["error"]["code"] == "service-unavailable", body
    assert int(retry_after) > 0


async def test_a_hung_store_costs_bounded_503s_and_the_edge_serves_its_cache(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    status, accepted, _ = await _upload(client, stack, _jpeg(10))
    assert status == 202, accepted
    first = await _wait_ready(client, stack, accepted["id"])
    cached_url = _variant(first, "236x", "jpeg")
    status, cached, _ = await _get(client, cached_url)  # now in the edge's L1 and Redis
    assert status == 200

    stack.s3.set_mode("blackhole")

    for process in stack.roles:
        status, body = await _readyz(client, process)
        if process is stack.edge:
            # Still serving from its caches: in rotation, and saying what is wrong.
            assert status == 200, body
            assert body["status"] == "degraded", body
            assert body["checks"]["storage"].startswith("degraded"), body
        else:
            assert status == 503, (process.role, body)
            assert body["checks"]["storage"].startswith("unavailable"), (process.role, body)
            assert body["checks"]["queue"] == "ok", body

    second = _jpeg(11)
    _assert_unavailable(*await _upload(client, stack, second))
    async with (
        asyncio.timeout(ANSWER_WITHIN),
        client.get(f"{stack.ingest.url}/v1/images/{first['id']}") as resp,
    ):
        _assert_unavailable(resp.status, await resp.json(), resp.headers.get("Retry-After", ""))
    status, body, _ = await _get(client, cached_url)
    assert status == 200
    assert body == cached
    status, body, retry_after = await _get(client, _variant(first, "474x", "webp"))
    _assert_unavailable(status, json.loads(body), retry_after)

    stack.s3.set_mode("pass")

    for process in stack.roles:
        await _ready_within(client, process)
    status, accepted, _ = await _upload(client, stack, second)
    assert status == 202, accepted
    # Nothing accepted is lost: both images are ready and served in full.
    for image_id in (first["id"], accepted["id"]):
        manifest = await _wait_ready(client, stack, image_id)
        for preset, fmt in (("236x", "jpeg"), ("474x", "webp")):
            status, body, _ = await _get(client, _variant(manifest, preset, fmt))
            assert status == 200, body
    for process in stack.roles:
        assert process.proc.poll() is None, process.log_tail()
