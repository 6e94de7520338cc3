"""Roles started while a dependency is down (issue #20, item 2): every role
listens at once, says on /readyz which dependency is missing, answers what it
can (status reads need only storage; uploads get 503 with Retry-After), and
heals by itself when the dependency comes: no restart, nothing lost.

Real OS processes (``pinhole ingest``, ``transcode``, ``serve``, ``cdn-purge``)
against real services: the broker is a free port where nothing listens until
the test starts tansu there; S3 is moto behind a proxy that refuses until the
test lets it pass; Redis is a free port until the test starts redis-server there.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips

from ingest.auth import token_digest
from pinhole.domain.ids import image_id_for_bytes
from tests.support.fault_proxy import FaultProxy, fault_proxy
from tests.support.processes import PinholeProcess, stack_env
from tests.support.services import (
    MotoS3,
    RedisServer,
    TansuBroker,
    free_port,
    start_redis,
    start_tansu,
)

pytestmark = pytest.mark.slow

TOKEN = "dependencies-down-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# A role imports and binds in about a second here; before the fix, a role
# whose broker was down never bound at all. Generous for a loaded CI machine.
LISTENS_WITHIN = 15.0
# /readyz answers within about a second (settings.readiness_timeout_seconds).
READYZ_WITHIN = 3.0
# A request to a role whose dependency is down gets its 503 in bounded time.
ANSWER_WITHIN = 10.0
# How long a role may take to notice a dependency that came back.
HEALS_WITHIN = 60.0
READY_WITHIN = 120.0


def _jpeg(seed: int) -> bytes:
    image = (pyvips.Image.black(96, 64) + seed).cast("uchar")
    data: bytes = image.write_to_buffer(".jpg", Q=90)
    return data


@dataclass
class Roles:
    env: dict[str, str]
    logs: Path
    ingest_port: int
    edge_port: int
    started: dict[str, PinholeProcess] = field(default_factory=dict)

    def spawn(self, role: str, port: int | None = None) -> PinholeProcess:
        """Start ``pinhole <role>`` without waiting for it: how fast it listens
        is what is tested."""
        port = port or free_port()
        log_path = self.logs / f"{role}-{port}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pinhole.app.cli", role, *self._listen_on(port)],
                env={**os.environ, **self.env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        process = PinholeProcess(port, proc, log_path, role=role)
        self.started[role] = process
        return process

    @staticmethod
    def _listen_on(port: int) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(port)]

    def stop(self) -> None:
        for process in self.started.values():
            process.stop()

    @property
    def ingest(self) -> str:
        return self.started["ingest"].url

    @property
    def edge(self) -> str:
        return self.started["serve"].url


@pytest.fixture
def roles(
    tmp_path: Path, unique_name: str, moto_s3: MotoS3, redis_server: RedisServer
) -> Iterator[Roles]:
    """Settings for every role; each test points the dependency it takes down elsewhere."""
    ingest_port, edge_port = free_port(), free_port()
    env = stack_env(
        storage=moto_s3.url(unique_name),
        queue="memory://",  # replaced by each test
        cache=redis_server.isolated_url(),
        ingest_port=ingest_port,
        edge_port=edge_port,
        token_sha256=token_digest(TOKEN),
        topic_prefix=unique_name,
        partitions=2,
    )
    env["PINHOLE_KAFKA__CONSUMER_GROUP"] = f"{unique_name}-transcoder"
    env["PINHOLE_KAFKA__SESSION_TIMEOUT_MS"] = "3000"
    # cdn-purge needs a cache to purge; nothing is deleted here, so none is called.
    env["PINHOLE_CDN_PURGE__VARNISH_URLS"] = json.dumps([f"http://127.0.0.1:{free_port()}"])
    running = Roles(env, tmp_path, ingest_port, edge_port)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


async def _listening_within(
    client: aiohttp.ClientSession, process: PinholeProcess, seconds: float
) -> None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        assert process.proc.poll() is None, process.log_tail()
        try:
            async with client.get(f"{process.url}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"pinhole {process.role} not listening {seconds}s after start:\n{process.log_tail()}"
    )


async def _readyz(client: aiohttp.ClientSession, process: PinholeProcess) -> tuple[int, Any]:
    async with asyncio.timeout(READYZ_WITHIN), client.get(f"{process.url}/readyz") as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def _ready_within(
    client: aiohttp.ClientSession, process: PinholeProcess, seconds: float = HEALS_WITHIN
) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        status, body = await _readyz(client, process)
        if status == 200 and body["status"] == "ok":
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{process.role} not ready: {body}\n{process.log_tail()}")
        await asyncio.sleep(0.25)


async def _post(client: aiohttp.ClientSession, ingest: str, data: bytes) -> tuple[int, Any, str]:
    headers = {**AUTH, "Content-Type": "image/jpeg"}
    async with (
        asyncio.timeout(ANSWER_WITHIN),
        client.post(f"{ingest}/v1/images", data=data, headers=headers) as resp,
    ):
        return resp.status, await resp.json(), resp.headers.get("Retry-After", "")


def _assert_unavailable(status: int, body: Any, retry_after: str) -> None:
    assert status == 503, body
    assert body["error"]["code"] == "service-unavailable"
    assert int(retry_after) > 0


async def _upload_until_ready(client: aiohttp.ClientSession, roles: Roles, data: bytes) -> None:
    """202, then ready end to end (the transcoder consumed it), then served."""
    status, body, _ = await _post(client, roles.ingest, data)
    assert status == 202, body
    deadline = time.monotonic() + READY_WITHIN
    while body["status"] == "pending":
        assert time.monotonic() < deadline, f"still pending: {body}"
        await asyncio.sleep(0.25)
        async with client.get(f"{roles.ingest}/v1/images/{body['id']}") as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
    assert body["status"] == "ready", body
    variant = next(v["url"] for v in body["variants"] if v["format"] == "jpeg")
    async with client.get(variant) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "image/jpeg"


async def test_every_role_listens_while_the_broker_is_down_and_heals_when_it_starts(
    roles: Roles, client: aiohttp.ClientSession
) -> None:
    broker_port = free_port()  # nothing listens here until tansu starts on it
    roles.env["PINHOLE_QUEUE"] = f"kafka://127.0.0.1:{broker_port}"
    ingest = roles.spawn("ingest", roles.ingest_port)
    transcode = roles.spawn("transcode")
    edge = roles.spawn("serve", roles.edge_port)
    purger = roles.spawn("cdn-purge")
    for process in (ingest, transcode, edge, purger):
        await _listening_within(client, process, LISTENS_WITHIN)

    for process in (ingest, transcode, purger):
        status, body = await _readyz(client, process)
        assert status == 503, (process.role, body)
        assert body["status"] == "unavailable"
        assert body["checks"]["queue"].startswith("unavailable"), (process.role, body)
    status, body = await _readyz(client, ingest)
    assert body["checks"]["storage"] == "ok"
    # The edge serves without the broker (it only hears deletes through it).
    status, body = await _readyz(client, edge)
    assert status == 200, body
    assert body["status"] == "degraded"
    assert body["checks"]["queue"].startswith("degraded"), body
    assert body["checks"]["storage"] == "ok"

    first = _jpeg(1)
    _assert_unavailable(*await _post(client, roles.ingest, first))
    # Status reads need only storage: the refused upload's pending record is
    # there (reconcile, or the client's retry, will queue it), and an unknown
    # id is a plain 404.
    first_id = image_id_for_bytes(first)
    async with asyncio.timeout(ANSWER_WITHIN):
        async with client.get(f"{roles.ingest}/v1/images/{first_id}") as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["status"] == "pending"
        async with client.get(f"{roles.ingest}/v1/images/{'0' * 32}") as resp:
            assert resp.status == 404, await resp.text()

    broker: TansuBroker = start_tansu(broker_port)
    try:
        for process in (ingest, transcode, edge, purger):
            await _ready_within(client, process)
        await _upload_until_ready(client, roles, _jpeg(2))
        # The client retrying the refused upload gets it processed.
        await _upload_until_ready(client, roles, first)
    finally:
        broker.stop()
    for process in roles.started.values():
        assert process.proc.poll() is None, process.log_tail()


async def test_roles_listen_while_storage_and_redis_are_down_and_heal_when_they_come(
    roles: Roles, client: aiohttp.ClientSession, moto_s3: MotoS3, tansu: TansuBroker
) -> None:
    redis_port = free_port()  # nothing listens here until redis-server starts on it
    roles.env["PINHOLE_QUEUE"] = tansu.url
    roles.env["PINHOLE_CACHE"] = f"redis://127.0.0.1:{redis_port}/0"
    with fault_proxy(moto_s3.port, mode="refuse") as s3:
        roles.env["PINHOLE_STORAGE"] = roles.env["PINHOLE_STORAGE"].replace(
            moto_s3.endpoint, s3.endpoint
        )
        ingest = roles.spawn("ingest", roles.ingest_port)
        transcode = roles.spawn("transcode")
        edge = roles.spawn("serve", roles.edge_port)
        for process in (ingest, transcode, edge):
            await _listening_within(client, process, LISTENS_WITHIN)

        for process in (ingest, transcode):
            status, body = await _readyz(client, process)
            assert status == 503, (process.role, body)
            assert body["checks"]["storage"].startswith("unavailable"), body
        # An edge keeps serving what its in-process cache holds: degraded, not unready.
        status, body = await _readyz(client, edge)
        assert status == 200, body
        assert body["status"] == "degraded"
        assert body["checks"]["storage"].startswith("degraded"), body
        assert body["checks"]["cache"].startswith("degraded"), body

        _assert_unavailable(*await _post(client, roles.ingest, _jpeg(3)))
        async with (
            asyncio.timeout(ANSWER_WITHIN),
            client.get(f"{roles.ingest}/v1/images/{'0' * 32}") as resp,
        ):
            assert resp.status == 503, await resp.text()
            assert resp.headers["Retry-After"]

        await _heal(s3, redis_port, client, roles, (ingest, transcode, edge))


async def _heal(
    s3: FaultProxy,
    redis_port: int,
    client: aiohttp.ClientSession,
    roles: Roles,
    processes: tuple[PinholeProcess, ...],
) -> None:
    s3.set_mode("pass")
    redis = start_redis(redis_port)
    try:
        for process in processes:
            await _ready_within(client, process)
        await _upload_until_ready(client, roles, _jpeg(3))
        await _upload_until_ready(client, roles, _jpeg(4))
    finally:
        redis.stop()
