"""Kafka ``JobQueue`` on aiokafka.

Jobs are keyed by image id, so Kafka's default partitioner keeps every job of
one image on one partition and a consumer group spreads images over workers.
Offsets are committed by hand and only over a contiguous run of acked
messages: a worker that dies, is kicked from the group or loses a partition in
a rebalance never commits past a job it did not finish, and the next owner
renders it again (idempotent, content-addressed writes make that harmless).

Every vendor failure leaves this module as ``QueueUnavailable``, and every
network wait is bounded, so callers can answer 503 or retry with backoff
instead of hanging on a dead broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    IllegalOperation,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)

from metrics.definitions import CONSUMER_LAG, forget_partition_lag
from pinhole.errors import QueueUnavailable
from pinhole.ports import Delivery, LogEntry, LogPage, Message
from pinhole.settings import Kafka

__all__ = ["KafkaDelivery", "KafkaJobQueue", "KafkaSubscription"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# What aiokafka and the network can throw at us. ConsumerStoppedError and
# IllegalOperation are not KafkaError subclasses; TimeoutError is an OSError
# but is named so that nobody "simplifies" it away.
_VENDOR_ERRORS: tuple[type[BaseException], ...] = (
    KafkaError,
    ConsumerStoppedError,
    IllegalOperation,
    asyncio.TimeoutError,
    OSError,
)

# A commit still unanswered after this long may be one the broker keeps
# refusing because it lost its topics (see KafkaSubscription._commit_offsets).
_SLOW_COMMIT_SECONDS = 2.0

# A partition revoked by a rebalance refuses commits; its messages go to the
# new owner, which is exactly what at-least-once allows.
_LOST_OWNERSHIP = (CommitFailedError, IllegalStateError)


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except _VENDOR_ERRORS as err:
        raise QueueUnavailable(f"kafka: {action} failed: {err!r}") from err


async def _bounded(awaitable: Awaitable[T], seconds: float) -> T:
    return await asyncio.wait_for(awaitable, seconds)


async def _stop_quietly(client: Any, seconds: float) -> None:
    """Best-effort shutdown: a dead broker must not turn cleanup into a failure."""
    try:
        await asyncio.wait_for(client.stop(), seconds)
    except _VENDOR_ERRORS as err:
        log.debug("kafka client stop failed: %r", err)


@dataclass(frozen=True, slots=True)
class KafkaDelivery:
    topic: str
    partition: int
    offset: int
    message: Message
    _subscription: KafkaSubscription = field(repr=False)
    _track: _PartitionTrack = field(repr=False)

    async def ack(self) -> None:
        await self._subscription.ack(self._track, self.offset)


@dataclass(eq=False, slots=True)
class _PartitionTrack:
    """Ack bookkeeping for one assignment of one partition.

    A fresh track per assignment: after a revoke, acks of old deliveries land
    on the dead track and are ignored, because the partition may already be
    someone else's (or ours again, re-read from the committed offset).
    """

    tp: Any  # aiokafka TopicPartition
    # Offset -> acked, in delivery order, for everything not yet committed.
    in_hand: dict[int, bool] = field(default_factory=dict)
    committed: int | None = None
    revoked: bool = False

    def commit_position(self) -> int | None:
        """The highest position with every delivered offset below it acked."""
        position: int | None = None
        for offset, acked in self.in_hand.items():
            if not acked:
                return offset
            position = offset + 1
        return position

    def mark_committed(self, position: int) -> None:
        self.committed = position
        for offset in [o for o in self.in_hand if o < position]:
            del self.in_hand[offset]


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self, subscription: KafkaSubscription, consumer: Any, starts: dict[Any, int] | None = None
    ) -> None:
        self._subscription = subscription
        self._consumer = consumer
        # For ``start="latest"``: each partition's end offset when subscribe()
        # was called, so a group without commits starts exactly there rather
        # than wherever the log ends once the (later) join completes.
        self._starts = starts

    async def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        await self._subscription.release(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        log.info("kafka: assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        if not self._starts:
            return
        for tp in assigned:
            start = self._starts.get(tp)
            if start is None:
                continue
            try:
                committed = await self._consumer.committed(tp)
            except _VENDOR_ERRORS as err:
                log.warning("kafka: reading the committed offset of %s failed: %r", tp, err)
                committed = None
            if committed is None:
                self._consumer.seek(tp, start)


class KafkaSubscription:
    """One consumer-group member reading one topic.

    Deliveries come from an internal buffer refilled with ``getmany``; a
    message counts as in hand only once it has been handed out, so buffered
    messages never hold back (or get skipped by) a commit.
    """

    def __init__(
        self,
        consumer: Any,
        topic: str,
        group: str,
        *,
        timeout_seconds: float,
        on_close: Callable[[KafkaSubscription], None] | None = None,
        on_trouble: Callable[[], Awaitable[None]] | None = None,
        poll_ms: int = 1000,
        max_records: int = 100,
    ) -> None:
        self._consumer = consumer
        self._on_close = on_close
        # Called when a commit fails or hangs: the broker may have lost its log,
        # and its topics with it (KafkaJobQueue.recreate_topics).
        self._on_trouble = on_trouble
        self._trouble: set[asyncio.Future[None]] = set()
        self._topic = topic
        self._group = group
        self._timeout = timeout_seconds
        self._poll_ms = poll_ms
        self._max_records = max_records
        self._buffer: deque[Any] = deque()
        self._tracks: dict[Any, _PartitionTrack] = {}
        self._commit_lock = asyncio.Lock()
        self._closed = False
        self._lag_reported: set[Any] = set()

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def group(self) -> str:
        return self._group

    def assignment(self) -> set[tuple[str, int]]:
        """Partitions this member owns right now (empty during a rebalance)."""
        if self._closed:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def __aiter__(self) -> KafkaSubscription:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._buffer:
                return self._hand_out(self._buffer.popleft())
            try:
                batches = await self._consumer.getmany(
                    timeout_ms=self._poll_ms, max_records=self._max_records
                )
            except ConsumerStoppedError:
                raise StopAsyncIteration from None
            except _VENDOR_ERRORS as err:
                if self._closed:
                    raise StopAsyncIteration from None
                raise QueueUnavailable(f"kafka: consuming {self._topic} failed: {err!r}") from err
            for records in batches.values():
                self._buffer.extend(records)
            await self._retry_pending_commits()
            self._report_lag()

    async def _retry_pending_commits(self) -> None:
        """Commit acked prefixes whose own commit failed (a timeout, a broker
        blip). Without this, a failed commit of a partition's last message
        waits for the next message on that partition, which may never come,
        and the group's lag never drains. Checked once per poll, so at most
        every ``poll_ms`` while idle."""
        pending = [
            t
            for t in self._tracks.values()
            if (position := t.commit_position()) is not None and position != t.committed
        ]
        if not pending:
            return
        try:
            await self._commit(pending)
        except QueueUnavailable as err:
            log.warning("kafka: retried commit failed: %s", err)

    def _hand_out(self, record: Any) -> KafkaDelivery:
        tp = TopicPartition(record.topic, record.partition)
        track = self._tracks.get(tp)
        if track is None:
            # The consumer starts at the group's committed position, so until
            # something is acked there is nothing new to commit.
            track = self._tracks[tp] = _PartitionTrack(tp, committed=record.offset)
        track.in_hand[record.offset] = False
        key = record.key.decode("utf-8", "replace") if record.key is not None else ""
        headers = {
            name: (value or b"").decode("utf-8", "replace") for name, value in record.headers
        }
        message = Message(key, record.value if record.value is not None else b"", headers)
        return KafkaDelivery(record.topic, record.partition, record.offset, message, self, track)

    async def ack(self, track: _PartitionTrack, offset: int) -> None:
        """Record the ack, then commit. If the commit fails the ack is kept and
        goes out with the next successful commit of that partition."""
        if track.revoked or self._closed or offset not in track.in_hand:
            return
        track.in_hand[offset] = True
        await self._commit([track])

    async def _commit(self, tracks: Iterable[_PartitionTrack]) -> None:
        # Positions are computed under the lock so a slow commit of an old
        # position can never land after (and undo) a newer one.
        async with self._commit_lock:
            offsets: dict[Any, int] = {}
            for track in tracks:
                position = track.commit_position()
                if position is not None and position != track.committed:
                    offsets[track.tp] = position
            if not offsets:
                return
            try:
                await self._commit_offsets(offsets)
            except _LOST_OWNERSHIP as err:
                log.info("kafka: commit of %s skipped, partition moved: %r", offsets, err)
                return
            except _VENDOR_ERRORS as err:
                self._report_trouble()
                raise QueueUnavailable(f"kafka: commit to {self._group} failed: {err!r}") from err
            for track in tracks:
                if track.tp in offsets:
                    track.mark_committed(offsets[track.tp])
            self._report_lag()

    async def _commit_offsets(self, offsets: dict[Any, int]) -> None:
        """``consumer.commit``, bounded. aiokafka retries a commit the broker
        refuses as retriable (UnknownTopicOrPartition from a broker that lost
        its topics) until our bound; one still going after
        ``_SLOW_COMMIT_SECONDS`` reports trouble, so the topics are created
        again while it retries and it succeeds, instead of timing out."""
        commit = asyncio.ensure_future(self._consumer.commit(offsets))
        try:
            done, _ = await asyncio.wait({commit}, timeout=min(_SLOW_COMMIT_SECONDS, self._timeout))
        except asyncio.CancelledError:
            commit.cancel()
            raise
        if not done:
            self._report_trouble()
        await _bounded(commit, max(0.0, self._timeout - _SLOW_COMMIT_SECONDS))

    def _report_trouble(self) -> None:
        """Run ``on_trouble`` in the background: recreating topics must not
        hold up the commit or the poll that ran into the trouble."""
        if self._on_trouble is None or self._closed:
            return
        task = asyncio.ensure_future(self._on_trouble())
        self._trouble.add(task)
        task.add_done_callback(self._trouble.discard)

    def _report_lag(self) -> None:
        """Set ``pinhole_consumer_lag`` per owned partition: the log end offset
        (highwater, from the latest fetch) minus the group's committed offset.

        A partition with nothing handed out since it was assigned is at its
        committed offset: its lag is what sits in the buffer, else nothing.
        """
        if self._closed:
            return
        owned = set(self._consumer.assignment())
        first_buffered: dict[Any, int] = {}
        for record in self._buffer:
            first_buffered.setdefault(TopicPartition(record.topic, record.partition), record.offset)
        for tp in owned:
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            track = self._tracks.get(tp)
            if track is not None and track.committed is not None:
                committed = track.committed
            else:
                committed = first_buffered.get(tp, end)
            CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - committed))
            self._lag_reported.add(tp)
        self._forget_lag(self._lag_reported - owned)

    def _forget_lag(self, partitions: Iterable[Any]) -> None:
        for tp in list(partitions):
            if tp in self._lag_reported:
                self._lag_reported.discard(tp)
                forget_partition_lag(tp.topic, tp.partition)

    async def release(self, partitions: Iterable[Any]) -> None:
        """Give partitions up: commit their acked prefix and forget the rest."""
        revoked = set(partitions)
        tracks = [self._tracks.pop(tp) for tp in revoked if tp in self._tracks]
        for track in tracks:
            track.revoked = True
        self._forget_lag(revoked)
        self._buffer = deque(r for r in self._buffer if (r.topic, r.partition) not in revoked)
        try:
            await self._commit(tracks)
        except QueueUnavailable as err:
            # The rebalance goes on regardless; uncommitted work is redelivered.
            log.warning("kafka: commit on revoke failed: %s", err)

    async def close(self) -> None:
        """Commit the acked prefix and leave the group, so a peer takes over now."""
        if self._closed:
            return
        tracks = list(self._tracks.values())
        try:
            await self._commit(tracks)
        except QueueUnavailable as err:
            log.warning("kafka: commit on close failed: %s", err)
        self._closed = True
        for task in list(self._trouble):
            task.cancel()
        self._tracks.clear()
        self._buffer.clear()
        self._forget_lag(self._lag_reported)
        await _stop_quietly(self._consumer, self._timeout)
        if self._on_close is not None:
            self._on_close(self)


class KafkaJobQueue:
    """A ``JobQueue`` on a Kafka cluster (or any Kafka-protocol broker)."""

    def __init__(
        self,
        bootstrap: str,
        settings: Kafka | None = None,
        *,
        replication_factor: int = 1,
        timeout_seconds: float = 15.0,
        request_timeout_ms: int = 10_000,
        session_timeout_ms: int = 10_000,
        client_id: str = "pinhole",
    ) -> None:
        if not bootstrap:
            raise ValueError("kafka bootstrap servers are required")
        if replication_factor < 1:
            raise ValueError("replication_factor must be at least 1")
        self.bootstrap = bootstrap
        self.settings = settings or Kafka()
        self.replication_factor = replication_factor
        self._timeout = timeout_seconds
        self._request_timeout_ms = request_timeout_ms
        self._session_timeout_ms = session_timeout_ms
        self._client_id = client_id
        self._producer: Any = None
        self._start_lock = asyncio.Lock()
        self._subscriptions: set[KafkaSubscription] = set()
        self._topics_checked = -math.inf

    @classmethod
    def from_url(
        cls, url: str, settings: Kafka | None = None, *, session_timeout_ms: int | None = None
    ) -> KafkaJobQueue:
        """``kafka://host:9092[,host2:9092][?replication=3]``."""
        parts = urlsplit(url)
        if parts.scheme != "kafka" or not parts.netloc:
            raise ValueError(f"not a kafka:// URL with hosts: {url!r}")
        query = parse_qs(parts.query)
        unknown = set(query) - {"replication"}
        if unknown:
            raise ValueError(f"unknown kafka URL options: {sorted(unknown)}")
        replication = int(query.get("replication", ["1"])[-1])
        settings = settings or Kafka()
        return cls(
            parts.netloc,
            settings,
            replication_factor=replication,
            session_timeout_ms=session_timeout_ms or settings.session_timeout_ms,
        )

    @property
    def topics(self) -> tuple[str, ...]:
        s = self.settings
        return (s.jobs_topic, s.events_topic, s.dead_letter_topic, s.webhook_dead_letter_topic)

    async def start(self) -> None:
        await self._producer_started()

    async def _producer_started(self) -> Any:
        """The running producer, connecting first if needed.

        Connecting lazily too (not only in ``start``) lets a process that
        booted while the broker was down heal once it is back.
        """
        async with self._start_lock:
            if self._producer is not None:
                return self._producer
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=self._client_id,
                acks="all",
                enable_idempotence=self.settings.idempotent_producer,
                linger_ms=5,
                request_timeout_ms=self._request_timeout_ms,
            )
            try:
                with _translated(f"connecting to {self.bootstrap}"):
                    # One bound for both steps: a black-holed broker must fail
                    # start() within the timeout, not within twice it.
                    await _bounded(self._connect(producer), self._timeout)
            except BaseException:
                await _stop_quietly(producer, self._timeout)
                raise
            self._producer = producer
            return producer

    async def _connect(self, producer: Any) -> None:
        await producer.start()
        await self._create_topics()

    async def _create_topics(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id=self._client_id,
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            await admin.start()
            response = await admin.create_topics(
                [
                    NewTopic(name, self.settings.partitions, self.replication_factor)
                    for name in self.topics
                ]
            )
            created = []
            for topic, code, *detail in response.topic_errors:
                if code and for_code(code) is not TopicAlreadyExistsError:
                    raise for_code(code)(f"creating topic {topic}: {detail}")
                if not code:
                    created.append(topic)
            if created:
                log.info("kafka: created topics %s", created)
        finally:
            with contextlib.suppress(*_VENDOR_ERRORS):
                await admin.close()

    # How often trouble may trigger recreate_topics (a CreateTopics request).
    TOPIC_CHECK_SECONDS = 10.0

    async def recreate_topics(self) -> None:
        """Create the topics again if they are gone (existing ones are left alone).

        A broker that lost its log lost its topics too, and nobody restarts to
        create them: whoever runs into trouble that may mean so (a publish that
        fails, a commit that fails or hangs) calls this. At most once
        per ``TOPIC_CHECK_SECONDS``, so an outage does not become a request storm.
        """
        now = time.monotonic()
        if now - self._topics_checked < self.TOPIC_CHECK_SECONDS:
            return
        self._topics_checked = now
        try:
            await _bounded(self._create_topics(), self._timeout)
        except _VENDOR_ERRORS as err:
            log.warning("kafka: could not create the topics: %r", err)

    async def publish(self, topic: str, message: Message) -> None:
        producer = await self._producer_started()
        headers = [(name, value.encode()) for name, value in message.headers.items()]
        # The producer retries internally up to its request timeout; the outer
        # bound covers metadata waits that aiokafka does not time out itself.
        seconds = self._request_timeout_ms / 1000 + self._timeout
        try:
            with _translated(f"publish to {topic}"):
                await _bounded(
                    producer.send_and_wait(
                        topic, message.value, key=message.key.encode(), headers=headers
                    ),
                    seconds,
                )
        except QueueUnavailable:
            await self.recreate_topics()  # the caller's retry finds them
            raise

    async def subscribe(
        self, topic: str, group: str, *, start: Literal["earliest", "latest"] = "earliest"
    ) -> KafkaSubscription:
        producer = await self._producer_started()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self._client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=start,
            # A slow transcode must not get the worker kicked out of the group.
            max_poll_interval_ms=self.settings.max_poll_interval_ms,
            # How long a vanished member holds its partitions. Real Kafka's floor
            # is 6 s; tests go lower because tansu numbers the first generation
            # 0, for which aiokafka sends no LeaveGroup, so every close leaves a
            # ghost member that only this timeout removes.
            session_timeout_ms=self._session_timeout_ms,
            # Frequent heartbeats are how members learn of a rebalance quickly.
            heartbeat_interval_ms=max(100, min(1_000, self._session_timeout_ms // 4)),
        )
        subscription = KafkaSubscription(
            consumer,
            topic,
            group,
            timeout_seconds=self._timeout,
            on_close=self._subscriptions.discard,
            on_trouble=self.recreate_topics,
        )
        try:
            with _translated(f"subscribing {group} to {topic}"):
                # Started before subscribing, so joining the group (which can
                # wait for a whole rebalance) happens in the background.
                await _bounded(consumer.start(), self._timeout)
                starts = None
                if start == "latest":
                    starts = await _bounded(
                        self._end_offsets(producer, consumer, topic), self._timeout
                    )
                listener = _RebalanceListener(subscription, consumer, starts)
                consumer.subscribe([topic], listener=listener)
        except BaseException:
            await _stop_quietly(consumer, self._timeout)
            raise
        self._subscriptions.add(subscription)
        return subscription

    @staticmethod
    async def _end_offsets(producer: Any, consumer: Any, topic: str) -> dict[Any, int]:
        partitions = await producer.partitions_for(topic)
        ends: dict[Any, int] = await consumer.end_offsets(
            [TopicPartition(topic, p) for p in sorted(partitions)]
        )
        return ends

    async def read_log(
        self, topic: str, positions: Mapping[int, int] | None, *, limit: int
    ) -> LogPage:
        """A consumer of no group, assigned every partition and positioned by
        hand: nothing is committed, and no rebalance waits on it."""
        producer = await self._producer_started()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            with _translated(f"reading {topic}"):
                return await _bounded(
                    self._read_log(producer, consumer, topic, positions or {}, limit),
                    self._timeout,
                )
        finally:
            await _stop_quietly(consumer, self._timeout)

    async def _read_log(
        self, producer: Any, consumer: Any, topic: str, positions: Mapping[int, int], limit: int
    ) -> LogPage:
        await consumer.start()
        partitions = sorted(await producer.partitions_for(topic))
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        firsts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        nexts = {
            tp.partition: min(max(positions.get(tp.partition, 0), firsts[tp]), ends[tp])
            for tp in tps
        }
        for tp in tps:
            consumer.seek(tp, nexts[tp.partition])
        entries: list[LogEntry] = []
        # Partitions still with something to read; each getmany returns what is
        # fetched so far, so loop until the limit or every partition's end.
        while len(entries) < limit and any(nexts[tp.partition] < ends[tp] for tp in tps):
            batches = await consumer.getmany(timeout_ms=200, max_records=limit - len(entries))
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp] or len(entries) >= limit:
                        break
                    headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
                    key = record.key.decode(errors="replace") if record.key else ""
                    entries.append(
                        LogEntry(tp.partition, record.offset, Message(key, record.value, headers))
                    )
                    nexts[tp.partition] = record.offset + 1
        return LogPage(entries, nexts)

    async def ping(self) -> None:
        producer = await self._producer_started()
        with _translated("metadata request"):
            await _bounded(producer.client.fetch_all_metadata(), self._timeout)

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer, self._timeout)
