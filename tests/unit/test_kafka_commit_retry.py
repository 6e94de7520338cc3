"""A failed commit of a partition's last acked message is retried on the next poll.

Without the retry the group's committed offset stays behind the log until another
message arrives on that partition, which may be never. The broker's behaviour
is not what is under test here (the contract suite runs the adapter on tansu):
this drives ``KafkaSubscription``'s own bookkeeping with a stand-in consumer
whose first commit times out.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from pinhole.errors import QueueUnavailable
from pinhole.queue.kafka import KafkaSubscription

TOPIC = "jobs"
TP = TopicPartition(TOPIC, 0)


@dataclass
class Record:
    offset: int
    topic: str = TOPIC
    partition: int = 0
    key: bytes = b"k"
    value: bytes = b"v"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class FlakyCommitConsumer:
    """One record on one partition; the first commit times out."""

    def __init__(self) -> None:
        self.pending = [Record(0)]
        self.commits: list[dict[Any, int]] = []
        self.failures_left = 1

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        records, self.pending = self.pending, []
        if not records:
            await asyncio.sleep(timeout_ms / 1000)  # an idle poll, as a broker's would be
        return {TP: records} if records else {}

    async def commit(self, offsets: dict[Any, int]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise KafkaTimeoutError()
        self.commits.append(dict(offsets))

    def assignment(self) -> set[Any]:
        return {TP}

    def highwater(self, tp: Any) -> int:
        return 1


async def test_a_failed_last_commit_goes_out_with_the_next_poll() -> None:
    consumer = FlakyCommitConsumer()
    subscription = KafkaSubscription(consumer, TOPIC, "group", timeout_seconds=1.0, poll_ms=1)
    delivery = await anext(aiter(subscription))
    with pytest.raises(QueueUnavailable):
        await delivery.ack()  # the commit after the ack times out
    assert consumer.commits == []
    # No further message ever arrives; an idle poll commits the acked prefix.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(anext(aiter(subscription)), 0.05)
    assert consumer.commits == [{TP: 1}]
