"""The whole pipeline across three OS processes, through a real Kafka-protocol
broker (tansu), a real S3-protocol server (moto) and a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from ingest.auth import token_digest
from tests.support.photos import upload_set
from tests.support.pipeline import (
    upload_all_and_verify,
    verify_bad_edge_urls,
    verify_bad_inputs,
)
from tests.support.processes import PinholeProcess, stack_env, start_pinhole
from tests.support.services import MotoS3, RedisServer, TansuBroker, free_port

pytestmark = pytest.mark.slow

TOKEN = "e2e-secret-token"


@pytest.fixture(scope="module")
def stack(
    tansu: TansuBroker,
    moto_s3: MotoS3,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, PinholeProcess]]:
    logs = tmp_path_factory.mktemp("logs")
    ingest_port, edge_port = free_port(), free_port()
    env = stack_env(
        storage=moto_s3.url("pinhole-e2e"),
        queue=tansu.url,
        cache=redis_server.url,
        ingest_port=ingest_port,
        edge_port=edge_port,
        token_sha256=token_digest(TOKEN),
        topic_prefix="e2e",
        partitions=4,
    )
    started: dict[str, PinholeProcess] = {}
    try:
        started["ingest"] = start_pinhole("ingest", env, logs, port=ingest_port)
        started["transcode"] = start_pinhole("transcode", env, logs)
        started["serve"] = start_pinhole("serve", env, logs, port=edge_port)
        yield started
    finally:
        for process in started.values():
            process.stop()


async def test_upload_transcode_serve_across_processes(
    stack: dict[str, PinholeProcess], session: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    ingest, transcode, serve = stack["ingest"], stack["transcode"], stack["serve"]
    manifests = await upload_all_and_verify(session, ingest.url, upload_set(), TOKEN)
    await verify_bad_edge_urls(session, serve.url, manifests[0]["id"])

    # The edge filled Redis on the way back: the L2 tier is in use for real.
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.dbsize() > 0
    finally:
        await client.aclose()

    for process in stack.values():
        async with session.get(f"{process.url}/readyz") as resp:
            assert resp.status == 200, await resp.text()
        async with session.get(f"{process.url}/metrics") as resp:
            assert "pinhole_" in await resp.text()
    async with session.get(f"{transcode.url}/metrics") as resp:
        text = await resp.text()
    assert 'pinhole_jobs_processed_total{result="ready"} 6.0' in text
    async with session.get(f"{serve.url}/metrics") as resp:
        text = await resp.text()
    assert 'pinhole_cache_requests_total{result="hit",tier="l1"}' in text
    for process in stack.values():
        assert process.proc.poll() is None, process.log_tail()


async def test_bad_input_gets_clear_errors_and_services_stay_up(
    stack: dict[str, PinholeProcess], session: aiohttp.ClientSession
) -> None:
    photo = upload_set()[0]
    await verify_bad_inputs(session, stack["ingest"].url, TOKEN, photo)
    for process in stack.values():
        assert process.proc.poll() is None, process.log_tail()


def test_processes_shut_down_cleanly_on_sigterm(stack: dict[str, PinholeProcess]) -> None:
    # Runs last in this module: SIGTERM must drain and exit 0, not die.
    for name in ("ingest", "serve", "transcode"):
        process = stack[name]
        assert process.stop() == 0, f"{name}:\n{process.log_tail()}"
        assert "Traceback" not in Path(process.log_path).read_text(), process.log_tail()
