"""A delete reaches every edge process, not only the one inside ``pinhole up``.

Ingest, a transcoder and two separate ``pinhole serve`` processes share real
tansu, moto S3 and Redis. Both edges hold the image's variant and a signed
rendition in their in-process L1 (and manifest facts) when ingest deletes it;
only the ``image.deleted`` event can tell them, and both must stop serving.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from ingest.auth import token_digest
from pinhole.domain.ids import parse_image_id
from pinhole.domain.ladder import Format
from server.signing import sign_path, signed_tail
from tests.support.photos import upload_set
from tests.support.pipeline import upload, wait_ready
from tests.support.processes import PinholeProcess, stack_env, start_pinhole, wait_for_log
from tests.support.services import MotoS3, RedisServer, TansuBroker, free_port

pytestmark = pytest.mark.slow

TOKEN = "purge-secret-token"
SIGNING_KEY = "purge-signing-key"
# Bounds, not expectations: they only stop a broken listener hanging the suite.
LISTENING_SECONDS = 60.0
PURGE_SECONDS = 60.0


@pytest.fixture(scope="module")
def stack(
    tansu: TansuBroker,
    moto_s3: MotoS3,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, PinholeProcess]]:
    logs = tmp_path_factory.mktemp("logs")
    ingest_port, edge_port, other_edge_port = free_port(), free_port(), free_port()
    env = stack_env(
        storage=moto_s3.url("pinhole-purge"),
        queue=tansu.url,
        cache=redis_server.url,
        ingest_port=ingest_port,
        edge_port=edge_port,
        token_sha256=token_digest(TOKEN),
        topic_prefix="purge",
        partitions=4,
    )
    env["PINHOLE_EDGE__SIGNING_KEYS"] = f'["{SIGNING_KEY}"]'
    # About what a delete purges, not timing: a Redis call that misses 0.25 s on
    # a loaded machine would make the DELETE a (retryable) 503.
    env["PINHOLE_HOT_CACHE__TIMEOUT_SECONDS"] = "5"
    started: dict[str, PinholeProcess] = {}
    try:
        started["ingest"] = start_pinhole("ingest", env, logs, port=ingest_port)
        started["transcode"] = start_pinhole("transcode", env, logs)
        started["edge-a"] = start_pinhole("serve", env, logs, port=edge_port)
        started["edge-b"] = start_pinhole("serve", env, logs, port=other_edge_port)
        yield started
    finally:
        for process in started.values():
            process.stop()


def _l1_hits(metrics: str) -> float:
    match = re.search(
        r'^pinhole_cache_requests_total\{result="hit",tier="l1"\} ([0-9.e+]+)$', metrics, re.M
    )
    return float(match.group(1)) if match else 0.0


def _server_errors(metrics: str) -> list[str]:
    return [
        line
        for line in metrics.splitlines()
        if line.startswith("pinhole_http_requests_total") and re.search(r'status="5\d\d"', line)
    ]


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url, headers={"Accept": "image/webp,*/*"}) as resp:
        await resp.read()
        return resp.status


async def test_a_delete_stops_every_edge_serving_variants_and_signed_renditions(
    stack: dict[str, PinholeProcess], redis_server: RedisServer
) -> None:
    edges = [stack["edge-a"], stack["edge-b"]]
    async with aiohttp.ClientSession() as session:
        for edge in edges:
            # Logged once subscribe() has returned; from then on (start "latest"
            # pins the offsets at that call) it sees every later delete.
            await wait_for_log(edge, "edge listening for deletes", LISTENING_SECONDS)
        status, body = await upload(session, stack["ingest"].url, upload_set()[0], TOKEN)
        assert status == 202, body
        manifest = await wait_ready(session, body["status_url"])
        assert manifest["status"] == "ready", manifest
        image_id = parse_image_id(manifest["id"])
        variant_path = manifest["urls"]["474x"].split("/", 3)[3]
        signed = sign_path(SIGNING_KEY, signed_tail(120, 80, "fill-centre", image_id, Format.WEBP))

        # Warm both edges: the second request of each URL is an L1 hit there.
        urls = {
            edge.url: [f"{edge.url}/{variant_path}.webp", f"{edge.url}{signed}"] for edge in edges
        }
        for edge in edges:
            async with session.get(f"{edge.url}/metrics") as resp:
                before = _l1_hits(await resp.text())
            for url in urls[edge.url] * 2:
                assert await _status(session, url) == 200, url
            async with session.get(f"{edge.url}/metrics") as resp:
                assert _l1_hits(await resp.text()) >= before + 2
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            pattern = f"*signed/*{image_id}*"
            assert [k async for k in client.scan_iter(match=pattern)], (
                "signed rendition not in Redis"
            )

            async with session.delete(
                f"{stack['ingest'].url}/v1/images/{image_id}",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as resp:
                assert resp.status == 204, await resp.text()

            # Without the event both edges would keep answering 200 from L1
            # (and from cached facts) until TTL.
            async with asyncio.timeout(PURGE_SECONDS):
                pending = [url for edge in edges for url in urls[edge.url]]
                while pending:
                    pending = [url for url in pending if await _status(session, url) != 404]
                    if pending:
                        await asyncio.sleep(0.2)
            # Signed renditions live only in the caches: the edges dropped them.
            for _ in range(int(PURGE_SECONDS / 0.2)):
                left = [k async for k in client.scan_iter(match=pattern)]
                if not left:
                    break
                await asyncio.sleep(0.2)
            assert left == [], left
        finally:
            await client.aclose()

        for edge in edges:
            async with session.get(f"{edge.url}/metrics") as resp:
                metrics = await resp.text()
            assert "pinhole_cache_requests_total" in metrics
            assert _server_errors(metrics) == [], metrics
            assert edge.proc.poll() is None, edge.log_tail()
            assert "Traceback" not in edge.log_tail(100_000), edge.log_tail()
