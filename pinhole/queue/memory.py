"""In-process ``JobQueue``: the embedded default for ``pinhole up`` and tests.

It mimics one Kafka partition per topic so that code written against it keeps
its at-least-once behaviour on Kafka: the log is append-only, each group has a
committed offset, and that offset moves only over a contiguous run of acked
messages. Nothing survives the process, which is why ``pinhole up`` relies on
pending manifests and reconcile rather than on this log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pinhole.ports import Delivery, LogEntry, LogPage, Message

__all__ = ["MemoryDelivery", "MemoryJobQueue", "MemorySubscription"]


@dataclass(frozen=True, slots=True)
class MemoryDelivery:
    topic: str
    offset: int
    message: Message
    _subscription: MemorySubscription = field(repr=False)

    async def ack(self) -> None:
        self._subscription.ack(self.offset)


class MemorySubscription:
    """One group's reader of one topic, starting at the group's committed offset."""

    def __init__(
        self,
        queue: MemoryJobQueue,
        topic: str,
        group: str,
        start: Literal["earliest", "latest"] = "earliest",
    ) -> None:
        self._queue = queue
        self._topic = topic
        self._group = group
        if start == "latest" and not queue.has_committed(topic, group):
            queue.commit(topic, group, len(queue.log(topic)))
        self._position = queue.committed(topic, group)
        # Offset -> acked, for everything handed out and not yet committed.
        self._in_hand: dict[int, bool] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> MemorySubscription:
        return self

    async def __anext__(self) -> Delivery:
        log = self._queue.log(self._topic)
        async with self._queue.changed:
            await self._queue.changed.wait_for(lambda: self._closed or self._position < len(log))
            if self._closed:
                raise StopAsyncIteration
            offset = self._position
            self._position += 1
            self._in_hand[offset] = False
            return MemoryDelivery(self._topic, offset, log[offset], self)

    def ack(self, offset: int) -> None:
        # After close the group may already have handed this message to a new
        # subscription; acking it here would commit on that one's behalf.
        if self._closed or offset not in self._in_hand:
            return
        self._in_hand[offset] = True
        committed = self._queue.committed(self._topic, self._group)
        while self._in_hand.get(committed):
            del self._in_hand[committed]
            committed += 1
        self._queue.commit(self._topic, self._group, committed)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._in_hand.clear()
        self._queue.detach(self._topic, self._group, self)
        async with self._queue.changed:
            self._queue.changed.notify_all()


class MemoryJobQueue:
    """Append-only log per topic and committed offset per (topic, group).

    One open subscription per (topic, group): a single process has no one to
    share a group with, and a second reader would need Kafka's partitioning to
    split the work sensibly.
    """

    def __init__(self) -> None:
        self._logs: dict[str, list[Message]] = {}
        self._committed: dict[tuple[str, str], int] = {}
        self._open: dict[tuple[str, str], MemorySubscription] = {}
        self.changed = asyncio.Condition()

    async def start(self) -> None:
        pass

    async def publish(self, topic: str, message: Message) -> None:
        # Copy the headers so a caller mutating its dict cannot rewrite history.
        stored = Message(message.key, message.value, dict(message.headers))
        self.log(topic).append(stored)
        async with self.changed:
            self.changed.notify_all()

    async def subscribe(
        self, topic: str, group: str, *, start: Literal["earliest", "latest"] = "earliest"
    ) -> MemorySubscription:
        if (topic, group) in self._open:
            raise RuntimeError(
                f"group {group!r} already has an open subscription to {topic!r}; "
                "the memory queue supports one per group"
            )
        subscription = MemorySubscription(self, topic, group, start)
        self._open[(topic, group)] = subscription
        return subscription

    async def read_log(
        self, topic: str, positions: Mapping[int, int] | None, *, limit: int
    ) -> LogPage:
        """One partition (0), as Kafka's would read."""
        log = self.log(topic)
        start = min(max((positions or {}).get(0, 0), 0), len(log))
        end = min(start + max(limit, 0), len(log))
        entries = [LogEntry(0, offset, log[offset]) for offset in range(start, end)]
        return LogPage(entries, {0: end})

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        for subscription in list(self._open.values()):
            await subscription.close()

    def messages(self, topic: str) -> list[Message]:
        """Everything ever published to ``topic``, oldest first (for inspection)."""
        return list(self._logs.get(topic, ()))

    def log(self, topic: str) -> list[Message]:
        return self._logs.setdefault(topic, [])

    def committed(self, topic: str, group: str) -> int:
        return self._committed.get((topic, group), 0)

    def has_committed(self, topic: str, group: str) -> bool:
        return (topic, group) in self._committed

    def commit(self, topic: str, group: str, offset: int) -> None:
        self._committed[(topic, group)] = offset

    def detach(self, topic: str, group: str, subscription: MemorySubscription) -> None:
        if self._open.get((topic, group)) is subscription:
            del self._open[(topic, group)]
