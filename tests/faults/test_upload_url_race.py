"""An upload URL is used once across processes, and not used up by a failure.

Two real `pinhole ingest` processes share one S3 store (moto's server) and one
record store; many concurrent uploads with one URL, spread over both, make
exactly one success. A broker that is down when the upload is queued costs the
upload a 503 but leaves the URL usable, so the retry succeeds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips

from ingest.auth import token_digest
from pinhole.domain.keys import UPLOAD_CLAIMS_PREFIX
from pinhole.errors import QueueUnavailable
from pinhole.ports import Message
from pinhole.queue.memory import MemoryJobQueue
from pinhole.records.sqlite import SqliteRecordStore
from pinhole.settings import Auth, Settings, UploadUrls
from storage.fs import FsBlobStore
from tests.support.apps import serving_ingest
from tests.support.processes import PinholeProcess, stack_env, start_pinhole
from tests.support.services import MotoS3, free_port

TOKEN = "upload-race-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY = "upload-race-signing-key"
ROUNDS = 3
UPLOADS_PER_ROUND = 8


def jpeg(n: int) -> bytes:
    data: bytes = pyvips.Image.black(20 + n, 10).write_to_buffer(".jpg")
    return data


@pytest.fixture(scope="module")
def ingests(
    moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[PinholeProcess]]:
    logs = tmp_path_factory.mktemp("upload-race")
    ports = [free_port(), free_port()]
    env = stack_env(
        storage=moto_s3.url("pinhole-upload-race"),
        queue="memory://",
        cache="memory://",
        ingest_port=ports[0],
        edge_port=free_port(),
        token_sha256=token_digest(TOKEN),
        topic_prefix="upload-race",
        partitions=1,
    )
    env["PINHOLE_UPLOAD_URLS__SIGNING_KEYS"] = json.dumps([KEY])
    started: list[PinholeProcess] = []
    try:
        for port in ports:  # one log dir: one record store for both
            started.append(start_pinhole("ingest", env, logs, port=port))
        yield started
    finally:
        for process in started:
            process.stop()


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=body, headers={"Content-Type": "image/jpeg"}) as resp:
        return resp.status, await resp.json()


async def test_one_url_used_concurrently_through_two_processes_succeeds_once(
    ingests: list[PinholeProcess], session: aiohttp.ClientSession
) -> None:
    for round_ in range(ROUNDS):
        async with session.post(
            f"{ingests[0].url}/v1/upload-urls", headers=AUTH, json={"owner": "racer"}
        ) as resp:
            assert resp.status == 201
            path = (await resp.json())["url"].split("/v1/uploads/", 1)[1]
        results = await asyncio.gather(
            *(
                _post(
                    session,
                    f"{ingests[n % 2].url}/v1/uploads/{path}",
                    jpeg(round_ * UPLOADS_PER_ROUND + n),
                )
                for n in range(UPLOADS_PER_ROUND)
            )
        )
        statuses = sorted(status for status, _ in results)
        assert statuses == [202] + [409] * (UPLOADS_PER_ROUND - 1), results
        assert {a["error"]["code"] for s, a in results if s == 409} == {"upload-url-used"}
        winner = next(a for s, a in results if s == 202)
        # The winner's record is there, through either process.
        for process in ingests:
            async with session.get(
                f"{process.url}/v1/records/{winner['record']['id']}", headers=AUTH
            ) as resp:
                assert resp.status == 200
                assert (await resp.json())["owner"] == "racer"


class FlakyQueue(MemoryJobQueue):
    """A broker that is down while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def publish(self, topic: str, message: Message) -> None:
        if self.down:
            raise QueueUnavailable("the test broker is down")
        await super().publish(topic, message)


@pytest.fixture
async def flaky(tmp_path: Path) -> AsyncIterator[tuple[str, FlakyQueue, FsBlobStore]]:
    settings = Settings(
        auth=Auth(token_sha256=[token_digest(TOKEN)]),
        upload_urls=UploadUrls(signing_keys=[KEY]),
    )
    store = FsBlobStore(tmp_path / "blobs")
    records = SqliteRecordStore(tmp_path / "records.db", timeout_seconds=5.0)
    queue = FlakyQueue()
    async with serving_ingest(settings, store, queue, records) as (base, _):
        yield base, queue, store


async def test_a_failure_after_the_claim_gives_the_url_back(
    flaky: tuple[str, FlakyQueue, FsBlobStore], session: aiohttp.ClientSession
) -> None:
    base, queue, store = flaky
    async with session.post(
        f"{base}/v1/upload-urls", headers=AUTH, json={"owner": "retrier"}
    ) as resp:
        path = (await resp.json())["url"].split("/v1/uploads/", 1)[1]
    url = f"{base}/v1/uploads/{path}"
    queue.down = True
    status, answer = await _post(session, url, jpeg(1))
    assert (status, answer["error"]["code"]) == (503, "service-unavailable")
    assert [i.key async for i in store.list(UPLOAD_CLAIMS_PREFIX)] == []
    queue.down = False
    status, answer = await _post(session, url, jpeg(1))
    assert status == 202, answer
    assert answer["record"]["owner"] == "retrier"
    status, answer = await _post(session, url, jpeg(1))
    assert (status, answer["error"]["code"]) == (409, "upload-url-used")
