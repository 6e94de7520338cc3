"""The ``JobQueue`` contract, run against every adapter on a real broker.

"Nothing was redelivered" is proven with sentinels rather than by waiting:
a sentinel published after the acked messages under the same key shares their
partition, so if the first thing a new subscription sees on that key is the
sentinel, nothing before it came back. Waiting for silence would depend on
how long a consumer group takes to form.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

import pytest

from pinhole.errors import QueueUnavailable
from pinhole.ports import Delivery, JobQueue, Message, Subscription
from pinhole.queue.kafka import KafkaJobQueue
from pinhole.queue.memory import MemoryJobQueue
from pinhole.settings import Kafka
from tests.support.services import TansuBroker, free_port

# Bounds, not expectations: a first join of a tansu consumer group takes a few
# seconds; these only stop a broken adapter from hanging the suite.
RECEIVE_SECONDS = 30.0
REBALANCE_SECONDS = 45.0
# tansu sends no LeaveGroup-able first generation (see pinhole.queue.kafka), so
# each close leaves a ghost member until its session expires; a short session
# keeps close-then-resubscribe tests to a few seconds each.
SESSION_MS = 2_000


def kafka_settings(name: str) -> Kafka:
    return Kafka(
        jobs_topic=f"{name}.jobs",
        events_topic=f"{name}.events",
        dead_letter_topic=f"{name}.dlq",
        consumer_group=f"{name}.group",
        partitions=4,
    )


@dataclass
class QueueCase:
    """A started queue, its topic and group names, and cleanup of what tests open."""

    kind: str
    queue: JobQueue
    topic: str
    name: str
    subscriptions: list[Subscription] = field(default_factory=list)

    def group(self, suffix: str = "g") -> str:
        return f"{self.name}.{suffix}"

    async def subscribe(
        self, group: str, start: Literal["earliest", "latest"] = "earliest"
    ) -> Subscription:
        subscription = await self.queue.subscribe(self.topic, group, start=start)
        self.subscriptions.append(subscription)
        return subscription


@pytest.fixture(params=["memory", "kafka"])
async def queue(request: pytest.FixtureRequest, unique_name: str) -> AsyncIterator[QueueCase]:
    settings = kafka_settings(unique_name)
    adapter: JobQueue
    if request.param == "memory":
        adapter = MemoryJobQueue()
    else:
        tansu: TansuBroker = request.getfixturevalue("tansu")
        adapter = KafkaJobQueue.from_url(tansu.url, settings, session_timeout_ms=SESSION_MS)
    await adapter.start()
    case = QueueCase(request.param, adapter, settings.jobs_topic, unique_name)
    yield case
    for subscription in case.subscriptions:
        await subscription.close()
    await adapter.close()


async def take(subscription: Subscription, count: int) -> list[Delivery]:
    """The next ``count`` deliveries; fails instead of hanging if they never come."""
    iterator = aiter(subscription)
    deliveries: list[Delivery] = []
    async with asyncio.timeout(RECEIVE_SECONDS):
        while len(deliveries) < count:
            deliveries.append(await anext(iterator))
    return deliveries


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll group state, which aiokafka changes in the background with no event to await."""
    async with asyncio.timeout(REBALANCE_SECONDS):
        while True:
            if condition():
                return
            await asyncio.sleep(0.2)


def values(deliveries: list[Delivery]) -> list[bytes]:
    return [d.message.value for d in deliveries]


async def publish_all(queue: JobQueue, topic: str, messages: list[Message]) -> None:
    for message in messages:
        await queue.publish(topic, message)


async def test_delivers_key_value_and_headers(queue: QueueCase) -> None:
    sent = Message("img-1", b"\x00job\xff", {"content-type": "application/json", "try": "1"})
    await queue.queue.publish(queue.topic, sent)

    subscription = await queue.subscribe(queue.group())
    [delivery] = await take(subscription, 1)

    assert delivery.topic == queue.topic
    assert delivery.message.key == sent.key
    assert delivery.message.value == sent.value
    assert dict(delivery.message.headers) == dict(sent.headers)
    await delivery.ack()


async def test_messages_of_one_key_arrive_in_order(queue: QueueCase) -> None:
    keys = ["a", "b", "c"]
    sent = [Message(key, f"{key}{i}".encode()) for i in range(10) for key in keys]
    await publish_all(queue.queue, queue.topic, sent)

    subscription = await queue.subscribe(queue.group())
    got = await take(subscription, len(sent))

    for key in keys:
        of_key = [d.message.value for d in got if d.message.key == key]
        assert of_key == [f"{key}{i}".encode() for i in range(10)]


async def test_acked_messages_are_not_redelivered(queue: QueueCase) -> None:
    sent = [Message("k", f"m{i}".encode()) for i in range(3)]
    await publish_all(queue.queue, queue.topic, sent)
    group = queue.group()

    first = await queue.subscribe(group)
    for delivery in await take(first, 3):
        await delivery.ack()
    await first.close()

    await queue.queue.publish(queue.topic, Message("k", b"sentinel"))
    second = await queue.subscribe(group)
    assert values(await take(second, 1)) == [b"sentinel"]


async def test_unacked_messages_are_redelivered_after_close(queue: QueueCase) -> None:
    await queue.queue.publish(queue.topic, Message("k", b"job"))
    group = queue.group()

    first = await queue.subscribe(group)
    [delivery] = await take(first, 1)
    await first.close()
    # Acking after close must not commit on behalf of the group's next member.
    await delivery.ack()

    second = await queue.subscribe(group)
    [again] = await take(second, 1)
    assert again.message == delivery.message
    await again.ack()


async def test_commit_never_skips_an_unacked_message(queue: QueueCase) -> None:
    sent = [Message("k", f"m{i}".encode()) for i in range(3)]
    await publish_all(queue.queue, queue.topic, sent)
    group = queue.group()

    first = await queue.subscribe(group)
    _m0, m1, m2 = await take(first, 3)
    await m1.ack()
    await m2.ack()
    await first.close()

    # m0 comes back first; m1 and m2 may come back too, as the committed
    # position cannot move past m0.
    second = await queue.subscribe(group)
    redelivered = await take(second, 1)
    assert values(redelivered) == [b"m0"]
    await redelivered[0].ack()

    await queue.queue.publish(queue.topic, Message("k", b"sentinel"))
    rest = await take(second, 1)
    while values(rest)[-1] != b"sentinel":
        rest += await take(second, 1)
    assert set(values(rest)) <= {b"m1", b"m2", b"sentinel"}
    for delivery in rest:
        await delivery.ack()


async def test_every_group_gets_every_message(queue: QueueCase) -> None:
    sent = [Message(f"k{i}", f"m{i}".encode()) for i in range(6)]
    await publish_all(queue.queue, queue.topic, sent)

    for group in (queue.group("a"), queue.group("b")):
        subscription = await queue.subscribe(group)
        got = await take(subscription, len(sent))
        assert sorted(values(got)) == sorted(m.value for m in sent)
        for delivery in got:
            await delivery.ack()


async def test_latest_start_skips_history_but_sees_everything_after_subscribe(
    queue: QueueCase,
) -> None:
    # Same key, so old and new share a partition: had history been replayed,
    # an old message would arrive before the first new one.
    old = [Message("k", f"old{i}".encode()) for i in range(3)]
    await publish_all(queue.queue, queue.topic, old)

    subscription = await queue.subscribe(queue.group("fresh"), start="latest")
    # Published right after subscribe() returns, before the group has surely
    # formed: "latest" means "after subscribe", not "after the join".
    new = [Message("k", f"new{i}".encode()) for i in range(2)]
    await publish_all(queue.queue, queue.topic, new)

    assert values(await take(subscription, 2)) == [b"new0", b"new1"]


async def test_latest_start_keeps_a_committed_offset(queue: QueueCase) -> None:
    group = queue.group("resume")
    first = await queue.subscribe(group)
    await publish_all(queue.queue, queue.topic, [Message("k", b"acked")])
    for delivery in await take(first, 1):
        await delivery.ack()
    await first.close()

    # Missed while no member was subscribed; the group's offset is before it.
    await publish_all(queue.queue, queue.topic, [Message("k", b"missed")])
    again = await queue.subscribe(group, start="latest")
    assert values(await take(again, 1)) == [b"missed"]


async def test_many_keys_consumed_exactly_once_when_acked(queue: QueueCase) -> None:
    keys = [f"k{i}" for i in range(10)]
    sent = [Message(keys[i % 10], f"m{i}".encode()) for i in range(50)]
    await publish_all(queue.queue, queue.topic, sent)
    group = queue.group()

    first = await queue.subscribe(group)
    got = await take(first, 50)
    assert sorted(values(got)) == sorted(m.value for m in sent)
    for delivery in got:
        await delivery.ack()
    await first.close()

    # One sentinel per key lands behind every acked message of that key's
    # partition, so ten deliveries that are all sentinels mean no replays.
    await publish_all(
        queue.queue, queue.topic, [Message(k, b"sentinel:" + k.encode()) for k in keys]
    )
    second = await queue.subscribe(group)
    assert sorted(values(await take(second, 10))) == sorted(b"sentinel:" + k.encode() for k in keys)


# --- Kafka only --------------------------------------------------------------


async def _read_all(
    queue: JobQueue, topic: str, positions: dict[int, int] | None, limit: int
) -> tuple[list[bytes], dict[int, int]]:
    """Page through the log with ``limit`` until a page comes back empty."""
    seen: list[bytes] = []
    async with asyncio.timeout(RECEIVE_SECONDS):
        while True:
            page = await queue.read_log(topic, positions, limit=limit)
            assert len(page.entries) <= limit
            seen += [entry.message.value for entry in page.entries]
            positions = page.positions
            if not page.entries:
                return seen, positions


async def test_the_log_pages_through_every_message_once_and_commits_nothing(
    queue: QueueCase,
) -> None:
    sent = [Message(f"k{n % 5}", f"m{n}".encode(), {"n": str(n)}) for n in range(13)]
    await publish_all(queue.queue, queue.topic, sent)
    seen, positions = await _read_all(queue.queue, queue.topic, None, limit=4)
    assert sorted(seen) == sorted(m.value for m in sent)
    # Within one key (one partition) the log keeps publish order.
    for key in {m.key for m in sent}:
        ours = [m.value for m in sent if m.key == key]
        assert [v for v in seen if v in ours] == ours
    # From the positions it gave, only what comes after.
    later = Message("k1", b"later", {})
    await queue.queue.publish(queue.topic, later)
    more, _ = await _read_all(queue.queue, queue.topic, positions, limit=4)
    assert more == [b"later"]
    # Reading committed nothing: a group still starts at the oldest message.
    subscription = await queue.subscribe(queue.group())
    delivered = await take(subscription, len(sent) + 1)
    assert sorted(values(delivered)) == sorted([*(m.value for m in sent), b"later"])


async def test_a_position_past_the_end_reads_from_the_end(queue: QueueCase) -> None:
    """A cursor from before the broker lost its log names offsets that are gone."""
    await queue.queue.publish(queue.topic, Message("k", b"one", {}))
    first = await queue.queue.read_log(queue.topic, None, limit=10)
    beyond = {partition: offset + 1000 for partition, offset in first.positions.items()}
    page = await queue.queue.read_log(queue.topic, beyond, limit=10)
    assert page.entries == []
    assert page.positions == first.positions


async def test_kafka_unreachable_broker_raises_queue_unavailable(unique_name: str) -> None:
    queue = KafkaJobQueue(f"127.0.0.1:{free_port()}", kafka_settings(unique_name))
    try:
        async with asyncio.timeout(20):
            with pytest.raises(QueueUnavailable):
                await queue.start()
        async with asyncio.timeout(20):
            with pytest.raises(QueueUnavailable):
                await queue.publish(queue.settings.jobs_topic, Message("k", b"v"))
        async with asyncio.timeout(20):
            with pytest.raises(QueueUnavailable):
                await queue.ping()
    finally:
        await queue.close()


async def test_kafka_silent_broker_times_out_as_queue_unavailable(unique_name: str) -> None:
    # Accepts connections and never answers: the case that hangs unbounded clients.
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    queue = KafkaJobQueue(f"127.0.0.1:{port}", kafka_settings(unique_name), timeout_seconds=2)
    try:
        async with asyncio.timeout(20):
            with pytest.raises(QueueUnavailable):
                await queue.start()
    finally:
        await queue.close()
        server.close()


async def test_kafka_group_members_split_partitions(tansu: TansuBroker, unique_name: str) -> None:
    settings = kafka_settings(unique_name)
    queues = [
        KafkaJobQueue(tansu.bootstrap, settings, session_timeout_ms=SESSION_MS) for _ in range(2)
    ]
    try:
        for q in queues:
            await q.start()
        members = [await q.subscribe(settings.jobs_topic, settings.consumer_group) for q in queues]

        def split() -> bool:
            owned = [m.assignment() for m in members]
            return all(owned) and not owned[0] & owned[1] and len(owned[0] | owned[1]) == 4

        await wait_until(split)

        sent = [Message(f"img-{i}", f"m{i}".encode()) for i in range(40)]
        await publish_all(queues[0], settings.jobs_topic, sent)

        received: list[set[bytes]] = [set(), set()]
        everything = {m.value for m in sent}

        async def consume(index: int) -> None:
            async for delivery in members[index]:
                received[index].add(delivery.message.value)
                await delivery.ack()
                if received[0] | received[1] >= everything:
                    return

        async with asyncio.timeout(RECEIVE_SECONDS):
            tasks = [asyncio.create_task(consume(i)) for i in range(2)]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                task.result()

        assert received[0] | received[1] == everything
        assert received[0]
        assert received[1]
    finally:
        for q in queues:
            await q.close()


async def test_kafka_rebalance_hands_unacked_messages_to_the_new_owner(
    tansu: TansuBroker, unique_name: str
) -> None:
    settings = kafka_settings(unique_name)
    queues = [
        KafkaJobQueue(tansu.bootstrap, settings, session_timeout_ms=SESSION_MS) for _ in range(2)
    ]
    topic, group = settings.jobs_topic, settings.consumer_group
    keys = [f"img-{i}" for i in range(20)]
    try:
        for q in queues:
            await q.start()
        await publish_all(queues[0], topic, [Message(k, k.encode()) for k in keys])

        first = await queues[0].subscribe(topic, group)
        held = await take(first, len(keys))
        for delivery in held[:5]:
            await delivery.ack()
        unacked = {d.message.value for d in held[5:]}

        second = await queues[1].subscribe(topic, group)
        await wait_until(lambda: bool(first.assignment() and second.assignment()))

        # Sentinels sit behind every original message of their key, so once
        # all of them are in, every replay there is going to be has arrived.
        await publish_all(queues[0], topic, [Message(k, b"sentinel") for k in keys])
        replayed: set[bytes] = set()
        sentinels: set[str] = set()

        async def consume(member: Subscription) -> None:
            async for delivery in member:
                if delivery.message.value == b"sentinel":
                    sentinels.add(delivery.message.key)
                else:
                    replayed.add(delivery.message.value)
                await delivery.ack()
                if len(sentinels) == len(keys):
                    return

        async with asyncio.timeout(RECEIVE_SECONDS):
            tasks = [asyncio.create_task(consume(m)) for m in (first, second)]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                task.result()

        assert replayed == unacked
    finally:
        for q in queues:
            await q.close()


def test_kafka_from_url_parses_hosts_and_replication() -> None:
    queue = KafkaJobQueue.from_url("kafka://a:9092,b:9093?replication=3", Kafka())
    assert queue.bootstrap == "a:9092,b:9093"
    assert queue.replication_factor == 3
    with pytest.raises(ValueError, match="kafka"):
        KafkaJobQueue.from_url("redis://a:6379", Kafka())
    assert isinstance(queue, JobQueue)
