"""Delivering events to one webhook endpoint: at least once, in order per image,
retried for hours, dead-lettered with the reason, never blocking the others.

Each endpoint reads the events topic in a consumer group of its own, so an
endpoint that is down holds back only its own deliveries. Within it, deliveries
go one at a time in log order; the log is keyed by image id, so events of one
image arrive in the order they happened. The group's offset moves past an
event only once it was delivered (any 2xx) or dead-lettered, so a dispatcher
that stops, or a process that dies, sends it again: a receiver drops duplicates
by ``webhook-id``, which is the event's id on every attempt.

A failed attempt (no answer in time, a refused connection, any status but 2xx,
a redirect) waits the next step of ``webhooks.retry_schedule_seconds`` and tries
again; past the last step the delivery goes to the webhook dead-letter topic,
with the endpoint, the attempts and the last reason, and the next event goes.
Before every attempt the endpoint's address is checked like an upload by URL
(``pinhole.netguard``): an endpoint that resolves to a private or internal
address is refused and never connected to.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from metrics.definitions import WEBHOOK_DELIVERIES, WEBHOOK_SECONDS
from pinhole.listening import listen
from pinhole.logs import ThrottledLog
from pinhole.netguard import check_url
from pinhole.ports import JobQueue, Message
from pinhole.retry import retry_transient
from pinhole.settings import Kafka, WebhookEndpoint, Webhooks
from webhooks.signing import signed_headers

log = logging.getLogger("pinhole.webhooks")

DEAD_LETTERED = "webhook.dead-lettered"


class DeliveryFailed(Exception):
    """One attempt did not deliver; the message says why (it is logged and, on
    the last attempt, dead-lettered)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event as the Standard Webhooks payload: ``{"type", "timestamp", "data"}``."""

    msg_id: str
    type: str
    key: str
    body: bytes


def outgoing(message: Message) -> Outgoing | None:
    """The payload of an event on the events topic; ``None`` for a message that
    is not one (which is skipped, not retried)."""
    try:
        event = json.loads(message.value)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    # Events published before they carried an id get one from their bytes, the
    # same on every attempt.
    msg_id = event.get("event_id")
    if not isinstance(msg_id, str):
        msg_id = "evt_" + hashlib.sha256(message.value).hexdigest()[:32]
    when = event.get("time")
    stamp = datetime.datetime.fromtimestamp(
        when if isinstance(when, int | float) else time.time(), tz=datetime.UTC
    )
    data = {k: v for k, v in event.items() if k not in ("type", "event_id", "time")}
    payload = {
        "type": event["type"],
        "timestamp": stamp.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Outgoing(msg_id, event["type"], message.key, body)


class EndpointDispatcher:
    """Reads the events topic for one endpoint, until cancelled."""

    def __init__(
        self,
        name: str,
        endpoint: WebhookEndpoint,
        queue: JobQueue,
        kafka: Kafka,
        settings: Webhooks,
        session: aiohttp.ClientSession,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.queue = queue
        self.kafka = kafka
        self.settings = settings
        # Made by pinhole.netguard.guarded_session: it connects only to checked addresses.
        self.session = session
        self.sleep = sleep
        self.group = f"{kafka.consumer_group}-webhooks-{name}"
        self.subscribed = asyncio.Event()
        self._failures = ThrottledLog(log)

    async def run(self) -> None:
        await listen(
            self.queue,
            self.kafka.events_topic,
            self.group,
            self._handle,
            who=f"webhook dispatcher {self.name}",
            listening="webhooks listening",
            subscribed=self.subscribed,
        )

    async def _handle(self, message: Message) -> None:
        event = outgoing(message)
        if event is not None and event.type in self.endpoint.events:
            await self.deliver(event)

    async def deliver(self, event: Outgoing) -> bool:
        """Every attempt the schedule allows; ``True`` once delivered, ``False``
        once dead-lettered."""
        waits = [0.0, *self.settings.retry_schedule_seconds]
        reason = ""
        for attempt, wait in enumerate(waits, start=1):
            if wait:
                await self.sleep(wait)
            try:
                await self._attempt(event)
            except DeliveryFailed as exc:
                reason = str(exc)
                WEBHOOK_DELIVERIES.labels(self.name, "failed").inc()
                self._failures.warning(
                    "failing",
                    "webhook attempt failed; retrying",
                    endpoint=self.name,
                    event=event.msg_id,
                    attempt=attempt,
                    error=reason,
                )
                continue
            WEBHOOK_DELIVERIES.labels(self.name, "delivered").inc()
            self._failures.recovered(
                "failing", "webhook endpoint answers again", endpoint=self.name
            )
            return True
        await self._dead_letter(event, len(waits), reason)
        return False

    async def _attempt(self, event: Outgoing) -> None:
        started = time.monotonic()
        try:
            # A literal address in the URL is checked here; a name, by the
            # session's resolver, on every new connection.
            check_url(self.endpoint.url, allow_loopback=self.settings.allow_loopback)
            now = int(time.time())
            headers = signed_headers(self.endpoint.secret, event.msg_id, now, event.body)
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
            async with self.session.post(
                self.endpoint.url,
                data=event.body,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            ) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    raise DeliveryFailed(f"the endpoint answered {resp.status}")
        except DeliveryFailed:
            raise
        except (aiohttp.ClientError, TimeoutError) as err:
            raise DeliveryFailed(f"{type(err).__name__}: {err}") from None
        except Exception as err:  # a refused address, a malformed URL
            raise DeliveryFailed(f"{type(err).__name__}: {err}") from None
        finally:
            WEBHOOK_SECONDS.labels(self.name).observe(time.monotonic() - started)

    async def _dead_letter(self, event: Outgoing, attempts: int, reason: str) -> None:
        WEBHOOK_DELIVERIES.labels(self.name, "dead_lettered").inc()
        record = {
            "type": DEAD_LETTERED,
            "endpoint": self.name,
            "url": self.endpoint.url,
            "attempts": attempts,
            "reason": reason,
            "webhook_id": event.msg_id,
            "payload": json.loads(event.body),
        }
        log.error(
            "webhook dead-lettered",
            extra={"endpoint": self.name, "event": event.msg_id, "error": reason},
        )
        message = Message(
            key=event.key, value=json.dumps(record).encode(), headers={"type": DEAD_LETTERED}
        )
        await retry_transient(
            lambda: self.queue.publish(self.kafka.webhook_dead_letter_topic, message),
            what="publish a webhook dead letter",
            cap_seconds=30.0,
        )
