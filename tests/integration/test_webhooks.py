"""Webhook deliveries (webhooks.dispatcher) to real HTTP receivers on loopback.

Signatures are checked with the Standard Webhooks project's own library, not
with ours. The queue is the in-process one here; tests/e2e runs the role as a
process over a real Kafka-protocol broker.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from pinhole.domain.ids import ImageId, image_id_for_bytes
from pinhole.events import IMAGE_DELETED, IMAGE_READY, event_message
from pinhole.netguard import guarded_session
from pinhole.queue.memory import MemoryJobQueue
from pinhole.settings import Kafka, WebhookEndpoint, Webhooks
from tests.support.services import free_port
from webhooks.dispatcher import DEAD_LETTERED, EndpointDispatcher

SECRET = "whsec_" + base64.b64encode(b"pinhole-webhook-test-key-32-bytes!").decode()
KAFKA = Kafka()


@dataclass
class Receiver:
    """An endpoint that answers ``statuses`` in turn (then 204) and keeps what it got."""

    statuses: list[int] = field(default_factory=list)
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        self.arrived.set()
        status = self.statuses.pop(0) if self.statuses else 204
        return web.Response(status=status)

    def verified(self) -> list[dict[str, Any]]:
        """Every delivery, its signature checked by the reference library."""
        checker = Webhook(SECRET)
        return [checker.verify(body, headers) for headers, body in self.got]

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made: list[tuple[TestServer, Receiver]] = []

    async def start() -> Receiver:
        receiver = Receiver()
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        receiver.url = str(server.make_url("/hook"))
        made.append((server, receiver))
        return receiver

    pool = [await start(), await start()]
    yield pool
    for server, _ in made:
        await server.close()


def _settings(schedule: list[float]) -> Webhooks:
    return Webhooks(retry_schedule_seconds=schedule, timeout_seconds=2.0, allow_loopback=True)


@dataclass
class Running:
    queue: MemoryJobQueue
    tasks: list[asyncio.Task[None]]


async def _run(
    queue: MemoryJobQueue, endpoints: dict[str, str], schedule: list[float]
) -> AsyncIterator[Running]:
    settings = _settings(schedule)
    async with guarded_session(allow_loopback=True) as session:
        dispatchers = [
            EndpointDispatcher(
                name, WebhookEndpoint(url=url, secret=SECRET), queue, KAFKA, settings, session
            )
            for name, url in endpoints.items()
        ]
        tasks = [asyncio.create_task(d.run()) for d in dispatchers]
        for dispatcher in dispatchers:
            await asyncio.wait_for(dispatcher.subscribed.wait(), 5)
        try:
            yield Running(queue, tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def image(n: int) -> ImageId:
    return image_id_for_bytes(f"webhook image {n}".encode())


async def _dead_letters(queue: MemoryJobQueue, count: int) -> list[dict[str, Any]]:
    subscription = await queue.subscribe(KAFKA.webhook_dead_letter_topic, "dlq-reader")
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(10):
            async for delivery in subscription:
                found.append(json.loads(delivery.message.value))
                if len(found) == count:
                    break
    finally:
        await subscription.close()
    return found


async def test_events_are_signed_per_the_standard_and_in_order_per_image(
    receivers: list[Receiver],
) -> None:
    receiver = receivers[0]
    queue = MemoryJobQueue()
    async for _ in _run(queue, {"app": receiver.url}, [0.05]):
        await queue.publish(KAFKA.events_topic, event_message(IMAGE_READY, image(1)))
        await queue.publish(KAFKA.events_topic, event_message(IMAGE_READY, image(2)))
        await queue.publish(KAFKA.events_topic, event_message(IMAGE_DELETED, image(1)))
        await receiver.wait_for(3)
    payloads = receiver.verified()
    assert [(p["type"], p["data"]["id"]) for p in payloads] == [
        (IMAGE_READY, image(1)),
        (IMAGE_READY, image(2)),
        (IMAGE_DELETED, image(1)),
    ]
    assert all(p["timestamp"].endswith("Z") for p in payloads)
    ids = [headers["webhook-id"] for headers, _ in receiver.got]
    assert len(set(ids)) == 3
    # A tampered body fails the reference check.
    headers, body = receiver.got[0]
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SECRET).verify(body.replace(b"image.ready", b"image.gone!"), headers)


async def test_a_failing_endpoint_is_retried_with_the_same_webhook_id(
    receivers: list[Receiver],
) -> None:
    receiver = receivers[0]
    receiver.statuses = [500, 503]
    queue = MemoryJobQueue()
    async for _ in _run(queue, {"app": receiver.url}, [0.05, 0.05, 0.05]):
        await queue.publish(KAFKA.events_topic, event_message(IMAGE_READY, image(3)))
        await receiver.wait_for(3)
    ids = {headers["webhook-id"] for headers, _ in receiver.got}
    assert len(ids) == 1
    assert len(receiver.verified()) == 3


async def test_an_endpoint_that_stays_down_is_dead_lettered_and_blocks_nobody(
    receivers: list[Receiver],
) -> None:
    healthy = receivers[1]
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    queue = MemoryJobQueue()
    async for _ in _run(queue, {"down": down, "up": healthy.url}, [0.05, 0.05]):
        await queue.publish(KAFKA.events_topic, event_message(IMAGE_READY, image(4)))
        await queue.publish(KAFKA.events_topic, event_message(IMAGE_READY, image(5)))
        await healthy.wait_for(2)
        dead = await _dead_letters(queue, 2)
    assert [p["data"]["id"] for p in healthy.verified()] == [image(4), image(5)]
    assert [d["payload"]["data"]["id"] for d in dead] == [image(4), image(5)]
    assert {(d["type"], d["endpoint"], d["attempts"]) for d in dead} == {(DEAD_LETTERED, "down", 3)}
    assert all("Cannot connect" in d["reason"] or "refused" in d["reason"] for d in dead)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://[::ffff:169.254.169.254]/latest/meta-data",
        "http://192.168.0.10:8080/hook",
    ],
)
async def test_an_endpoint_on_an_internal_address_is_never_connected_to(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects: list[Any] = []
    loop = asyncio.get_running_loop()
    real = loop.create_connection

    async def watched(*args: Any, **kwargs: Any) -> Any:
        connects.append((args, kwargs))
        return await real(*args, **kwargs)

    monkeypatch.setattr(loop, "create_connection", watched)
    queue = MemoryJobQueue()
    async for _ in _run(queue, {"inside": url}, [0.01]):
        await queue.publish(KAFKA.events_topic, event_message(IMAGE_READY, image(6)))
        [dead] = await _dead_letters(queue, 1)
    assert "not a public address" in dead["reason"]
    assert connects == []
