"""Webhooks and the event log across real processes: `pinhole ingest`,
`transcode` and `webhooks` over tansu and moto, delivering to HTTP receivers on
loopback. Signatures are checked with the Standard Webhooks project's library."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from ingest.auth import token_digest
from pinhole.queue.kafka import KafkaJobQueue
from pinhole.settings import Kafka
from tests.support.photos import load_photo
from tests.support.pipeline import wait_ready
from tests.support.processes import PinholeProcess, stack_env, start_pinhole, wait_for_log
from tests.support.services import MotoS3, TansuBroker, free_port

pytestmark = pytest.mark.slow

TOKEN = "webhooks-e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "whsec_" + base64.b64encode(b"the-e2e-webhook-signing-key-bytes").decode()


@dataclass
class Receiver:
    got: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.got.append(Webhook(SECRET).verify(body, dict(request.headers)))
        return web.Response(status=204)

    async def wait_for(self, kind: str, image_id: str, within: float = 120.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for event in self.got:
                    if event["type"] == kind and event["data"]["id"] == image_id:
                        return event
                await asyncio.sleep(0.2)


@dataclass
class Stack:
    env: dict[str, str]
    logs: Path
    ingest: PinholeProcess
    webhooks: PinholeProcess
    receiver: Receiver
    bootstrap: str
    processes: list[PinholeProcess]


@pytest.fixture
async def stack(
    tansu: TansuBroker, moto_s3: MotoS3, unique_name: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    ingest_port, edge_port = free_port(), free_port()
    env = {
        **stack_env(
            storage=moto_s3.url(unique_name),
            queue=tansu.url,
            cache="memory://",
            ingest_port=ingest_port,
            edge_port=edge_port,
            token_sha256=token_digest(TOKEN),
            topic_prefix=unique_name,
            partitions=2,
        ),
        "PINHOLE_KAFKA__CONSUMER_GROUP": unique_name,
        "PINHOLE_KAFKA__WEBHOOK_DEAD_LETTER_TOPIC": f"{unique_name}.webhooks.dlq",
        "PINHOLE_WEBHOOKS__ENDPOINTS": json.dumps(
            {
                "app": {"url": str(server.make_url("/hook")), "secret": SECRET},
                "down": {"url": f"http://127.0.0.1:{free_port()}/hook", "secret": SECRET},
            }
        ),
        "PINHOLE_WEBHOOKS__RETRY_SCHEDULE_SECONDS": "[0.2, 0.2]",
        "PINHOLE_WEBHOOKS__ALLOW_LOOPBACK": "true",
    }
    started: list[PinholeProcess] = []
    try:
        ingest = start_pinhole("ingest", env, tmp_path, port=ingest_port)
        started.append(ingest)
        started.append(start_pinhole("transcode", env, tmp_path))
        webhooks = start_pinhole("webhooks", env, tmp_path)
        started.append(webhooks)
        # Both dispatchers subscribed: they start at the newest event.
        for _ in range(2):
            await wait_for_log(webhooks, "webhooks listening")
        await asyncio.sleep(2)
        yield Stack(env, tmp_path, ingest, webhooks, receiver, tansu.url, started)
    finally:
        for process in started:
            process.stop()
        await server.close()


async def _upload(session: aiohttp.ClientSession, ingest: PinholeProcess, name: str) -> Any:
    async with session.post(
        f"{ingest.url}/v1/images",
        data=load_photo(name).data,
        headers={**AUTH, "Content-Type": "image/jpeg"},
    ) as resp:
        assert resp.status in (200, 202), await resp.text()
        return await resp.json()


async def _events(
    session: aiohttp.ClientSession, ingest: PinholeProcess, after: str | None, limit: int
) -> Any:
    params = {"limit": str(limit), **({"after": after} if after else {})}
    async with session.get(f"{ingest.url}/v1/events", params=params, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_events_reach_the_endpoint_signed_and_a_dead_one_is_dead_lettered(
    stack: Stack, session: aiohttp.ClientSession, unique_name: str
) -> None:
    uploaded = await _upload(session, stack.ingest, "autumn-2560x1600.jpg")
    await wait_ready(session, uploaded["status_url"])
    ready = await stack.receiver.wait_for("image.ready", uploaded["id"])
    assert ready["data"]["surrogate_key"] == f"img-{uploaded['id']}"
    async with session.delete(f"{stack.ingest.url}/v1/images/{uploaded['id']}", headers=AUTH) as r:
        assert r.status == 204
    await stack.receiver.wait_for("image.deleted", uploaded["id"])

    # The endpoint that never answers: both events dead-lettered with the reason.
    queue = KafkaJobQueue.from_url(stack.bootstrap, Kafka(partitions=2))
    dead: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(60):
            while len(dead) < 2:
                page = await queue.read_log(f"{unique_name}.webhooks.dlq", None, limit=10)
                dead = [json.loads(e.message.value) for e in page.entries]
                await asyncio.sleep(0.5)
    finally:
        await queue.close()
    assert [(d["endpoint"], d["payload"]["type"]) for d in dead] == [
        ("down", "image.ready"),
        ("down", "image.deleted"),
    ]
    assert all(d["attempts"] == 3 and d["reason"] for d in dead)
    async with session.get(f"{stack.webhooks.url}/metrics") as resp:
        metrics = await resp.text()
    assert 'pinhole_webhook_deliveries_total{endpoint="app",result="delivered"} 2.0' in metrics
    assert 'pinhole_webhook_deliveries_total{endpoint="down",result="dead_lettered"} 2.0' in metrics


async def test_the_event_log_pages_with_a_cursor_that_outlives_a_restart(
    stack: Stack, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    first = await _upload(session, stack.ingest, "pastelhills-3200x2000.jpg")
    await wait_ready(session, first["status_url"])
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    async with asyncio.timeout(60):
        while True:
            page = await _events(session, stack.ingest, cursor, limit=1)
            cursor = page["cursor"]
            if not page["events"]:
                break
            assert len(page["events"]) == 1
            seen += page["events"]
    assert [e["type"] for e in seen if e["id"] == first["id"]] == ["image.ready"]

    # A new ingest process: the cursor still reads on from where it stopped.
    stack.ingest.stop()
    ingest = start_pinhole("ingest", stack.env, tmp_path, port=stack.ingest.port)
    stack.processes.append(ingest)
    # A new client too: the old one's pooled connections went with the old process.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as fresh:
        second = await _upload(fresh, ingest, "flow-dark-720x1440-portrait.jpg")
        await wait_ready(fresh, second["status_url"])
        page = await _events(fresh, ingest, cursor, limit=100)
        assert [(e["type"], e["id"]) for e in page["events"]] == [("image.ready", second["id"])]
        async with fresh.get(
            f"{ingest.url}/v1/events", params={"after": "not-a-cursor"}, headers=AUTH
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "invalid-cursor"
