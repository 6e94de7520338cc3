"""Consumer lag per partition, reported by the Kafka subscription, on a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from pinhole.ports import Delivery, Message
from pinhole.queue.kafka import KafkaJobQueue, KafkaSubscription
from pinhole.settings import Kafka
from tests.support.services import TansuBroker

# Bounds, not expectations: the first join of a tansu consumer group takes seconds.
RECEIVE_SECONDS = 30.0


@pytest.fixture
async def queue(tansu: TansuBroker, unique_name: str) -> AsyncIterator[KafkaJobQueue]:
    settings = Kafka(
        jobs_topic=f"{unique_name}.jobs",
        events_topic=f"{unique_name}.events",
        dead_letter_topic=f"{unique_name}.dlq",
        consumer_group=f"{unique_name}.group",
        partitions=2,
    )
    adapter = KafkaJobQueue.from_url(tansu.url, settings, session_timeout_ms=2_000)
    await adapter.start()
    yield adapter
    await adapter.close()


def lag(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "pinhole_consumer_lag", {"topic": topic, "partition": str(partition)}
    )


async def take(subscription: KafkaSubscription, count: int) -> list[Delivery]:
    iterator = aiter(subscription)
    async with asyncio.timeout(RECEIVE_SECONDS):
        return [await anext(iterator) for _ in range(count)]


async def test_lag_is_end_offset_minus_committed_and_goes_with_the_partition(
    queue: KafkaJobQueue,
) -> None:
    topic = queue.settings.jobs_topic
    # One key: every message on one partition.
    for i in range(5):
        await queue.publish(topic, Message("image-a", f"job-{i}".encode()))
    subscription = await queue.subscribe(topic, queue.settings.consumer_group)
    try:
        first, second = await take(subscription, 2)
        partition = first.partition  # type: ignore[attr-defined]
        # Two in hand, none acked: all five are still to do.
        assert lag(topic, partition) == 5
        await first.ack()
        assert lag(topic, partition) == 4
        await second.ack()
        assert lag(topic, partition) == 3
        rest = await take(subscription, 3)
        for delivery in rest:
            await delivery.ack()
        assert lag(topic, partition) == 0
        # More work arrives: the next fetch sees the new end of the log.
        for i in range(2):
            await queue.publish(topic, Message("image-a", f"late-{i}".encode()))
        [late, _] = await take(subscription, 2)
        assert lag(topic, partition) == 2
        await late.ack()
        assert lag(topic, partition) == 1
    finally:
        await subscription.close()
    # A closed member owns nothing: its lag series are gone.
    assert lag(topic, partition) is None
    assert lag(topic, 1 - partition) is None
