"""The Protocols services depend on. Adapters implement them; services never
import a vendor client.

Error contract for every adapter: vendor exceptions are translated at the
adapter boundary into ``pinhole.errors`` port errors — ``ObjectNotFound`` for a
missing key, ``StorageUnavailable`` / ``QueueUnavailable`` / ``CacheUnavailable``
/ ``CdnUnavailable`` for anything that may heal with a retry. Render engines
raise ``UndecodableImage`` or ``ImageTooLarge`` for inputs that can never succeed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from pinhole.domain.ids import ImageId
from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import Format, Preset
from pinhole.domain.manifest import Animation, Placeholder
from pinhole.domain.quota import Quota, Usage
from pinhole.domain.record import OwnerDeletion, Record, RecordId, RecordPage


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: float  # unix seconds
    content_type: str = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class StoredObject:
    info: ObjectInfo
    body: bytes


@runtime_checkable
class BlobStore(Protocol):
    """Flat key/value object storage (S3, MinIO, a local directory)."""

    async def put(
        self, key: str, body: bytes, *, content_type: str, if_absent: bool = False
    ) -> bool:
        """Store ``body`` at ``key``. With ``if_absent`` an existing object is kept
        and ``False`` returned (content-addressed dedup); otherwise ``True``."""
        ...

    async def put_file(
        self, key: str, path: Path, *, content_type: str, if_absent: bool = False
    ) -> bool:
        """Like ``put`` but streams from a local file, never loading it whole."""
        ...

    async def get(self, key: str) -> StoredObject:
        """The object; ``ObjectNotFound`` if there is none."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """Metadata, or ``None`` if there is no object."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    async def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the store answers."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Message:
    key: str
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class Delivery(Protocol):
    """One consumed message. ``ack`` marks it done; the adapter commits the
    position only past messages that are all acked (at-least-once)."""

    @property
    def message(self) -> Message: ...

    @property
    def topic(self) -> str: ...

    async def ack(self) -> None: ...


class Subscription(Protocol):
    """An open consumer in a group. Iterate for deliveries; ``close`` leaves the group
    without acknowledging anything still in hand (it will be redelivered)."""

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One message of a topic's log, where it stands in it."""

    partition: int
    offset: int
    message: Message


@dataclass(frozen=True, slots=True)
class LogPage:
    """Entries read from a log, and where to read on: the next offset of every
    partition of the topic (unchanged for a partition that had nothing new)."""

    entries: list[LogEntry]
    positions: dict[int, int]


@runtime_checkable
class JobQueue(Protocol):
    """A partitioned log with consumer groups (Kafka, or in-process memory)."""

    async def start(self) -> None:
        """Connect, and create the configured topics if they do not exist."""
        ...

    async def publish(self, topic: str, message: Message) -> None:
        """Durably append (acks=all); raise ``QueueUnavailable`` if it cannot."""
        ...

    async def subscribe(
        self, topic: str, group: str, *, start: Literal["earliest", "latest"] = "earliest"
    ) -> Subscription:
        """Read ``topic`` as a member of ``group``, from the group's committed offset.

        A group with no committed offset starts at the oldest message
        (``"earliest"``) or after the last one published before this call
        returned (``"latest"``: a listener that wants no history).
        """
        ...

    async def read_log(
        self, topic: str, positions: Mapping[int, int] | None, *, limit: int
    ) -> LogPage:
        """Up to ``limit`` messages of ``topic`` from ``positions`` (the next offset
        per partition; a missing partition, or ``None``, starts at the oldest
        message the log still holds), in offset order within each partition, as
        no consumer group: nothing is committed, any number of readers at once.
        A position before the oldest retained message starts at that one; past
        the end (a broker that lost its log) at the end. ``QueueUnavailable`` if
        the broker does not answer."""
        ...

    async def ping(self) -> None:
        """Raise ``QueueUnavailable`` unless the broker answers."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class HotCache(Protocol):
    """Bytes by key, bounded, lossy by design (Redis, Redis Cluster, memory LRU).
    Any failure raises ``CacheUnavailable``; callers fall back to storage."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl_seconds: int) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class CdnCache(Protocol):
    """A CDN cache in front of the edge that can forget every URL of an image
    (varnish by surrogate key, nginx URL by URL). ``CdnUnavailable`` for what a
    retry may heal; ``CdnRefused`` when the cache says no (a purger's address
    not allowed), which no retry heals."""

    name: str

    async def purge(self, image_id: ImageId) -> int:
        """Drop every cached URL of ``image_id``; how many entries were dropped."""
        ...

    async def purge_alias(self, owner: str, alias: str | None) -> int:
        """Drop the cached redirects of an owner's alias (``None``: of every alias
        of the owner, where the cache can tell them); how many were dropped."""
        ...


class RenderLock(Protocol):
    """A lock across edge processes, so a cold variant is rendered once, not once
    per process. Adapters: ``pinhole.cache.render_lock`` (local, Redis)."""

    async def acquire(self, key: str) -> str | None:
        """A token if this caller now holds the lock, ``None`` if another does.
        ``CacheUnavailable`` if the lock service cannot answer."""
        ...

    async def held(self, key: str) -> bool: ...

    async def release(self, key: str, token: str) -> None:
        """Only the holder's token releases; ``CacheUnavailable`` if it cannot
        answer (the lock then expires by itself)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RenderedVariant:
    preset: Preset
    fmt: Format
    width: int
    height: int
    body: bytes
    seconds: float


@dataclass(frozen=True, slots=True)
class Rendering:
    variants: list[RenderedVariant]
    placeholder: Placeholder
    # Set when the variants kept an animation (transcoder/animation.py).
    animation: Animation | None = None


class LadderEngine(Protocol):
    """What the transcoder renders a whole ladder with (``transcoder/``: vips,
    pillow-simd). Blocking: engines run on the worker's bounded thread pool."""

    def render_ladder(
        self, data: bytes, source: SourceInfo, *, focal: tuple[float, float] | None = None
    ) -> Rendering:
        """Every (preset, format) of the ladder; ``cover`` presets of gravity
        ``focal`` crop around ``focal`` (x, y in 0..1)."""
        ...


class RenderEngine(Protocol):
    """What the edge renders on the fly with. Blocking: the edge runs it on its
    bounded render pool."""

    def render_variant(
        self,
        data: bytes,
        preset: Preset,
        fmt: Format,
        has_alpha: bool,
        *,
        focal: tuple[float, float] | None = None,
    ) -> RenderedVariant:
        """One (preset, format) of the ladder, byte-for-byte what the transcoder's
        engine makes for it."""
        ...

    def render_box(
        self,
        data: bytes,
        width: int,
        height: int,
        fmt: Format,
        has_alpha: bool,
        *,
        crop: str | None = None,
        preset: Preset | None = None,
        focal: tuple[float, float] | None = None,
    ) -> RenderedVariant:
        """Fit within ``width`` x ``height`` (``crop=None``), or fill exactly that
        box cropping with ``crop`` ("focal": around ``focal``); never upscales."""
        ...


@runtime_checkable
class RecordStore(Protocol):
    """Records: one owner's use of an image (``pinhole.domain.record``), on SQL shards.

    Every record of an owner lives on the owner's virtual shard, and a record id
    carries its shard, so every call but the by-image ones touches one shard.

    Error contract: ``RecordNotFound`` (``AliasNotFound`` for an alias) when there
    is no such record; ``AliasTaken`` when another record of the owner holds the
    alias; ``InvalidOwner`` / ``InvalidAlias`` / ``InvalidMetadata`` /
    ``InvalidCursor`` for input the domain refuses (checked before any I/O);
    ``RecordStoreUnavailable``, naming the shard and its server, for anything a
    retry may heal: a server down, refusing or slower than the store's deadline.
    Each call is bounded by that deadline, so a dead server costs about a second.
    No driver exception escapes an adapter.
    """

    async def create(
        self,
        owner: str,
        image_id: ImageId,
        *,
        metadata: Mapping[str, object] | None = None,
        alias: str | None = None,
        private: bool = False,
        size_bytes: int = 0,
        quota: Quota | None = None,
    ) -> Record:
        """A new record on the owner's shard, with a fresh id. With ``alias`` the
        record is created holding it, or not at all (``AliasTaken``).
        ``size_bytes`` (its image's original) counts toward the owner's usage;
        with ``quota`` the record is made only if it fits in the same
        transaction, against every committed record of the owner
        (``QuotaExceeded``)."""
        ...

    async def usage(self, owner: str) -> Usage:
        """The owner's records and their bytes, as quotas count them."""
        ...

    async def get(self, record_id: RecordId) -> Record:
        """The record; ``RecordNotFound`` if there is none."""
        ...

    async def list_by_owner(
        self, owner: str, *, limit: int = 100, cursor: str | None = None
    ) -> RecordPage:
        """The owner's records, newest first, ``limit`` (1..1000) at a time.

        Keyset pagination on (created, id), never an offset: a walk that follows
        the cursors sees every record that exists throughout it exactly once,
        whatever is inserted or deleted meanwhile."""
        ...

    async def get_by_alias(self, owner: str, alias: str) -> Record:
        """The owner's record holding ``alias``; ``AliasNotFound`` if none."""
        ...

    async def set_alias(self, record_id: RecordId, alias: str, *, move: bool = False) -> Record:
        """Give the record ``alias`` (a no-op if it holds it already). If another
        record of the owner holds it: ``AliasTaken``, or with ``move`` the alias
        leaves that record in the same transaction. Of concurrent claims of one
        alias exactly one wins."""
        ...

    async def clear_alias(self, record_id: RecordId) -> Record:
        """The record without an alias (a no-op if it has none)."""
        ...

    async def update(
        self,
        record_id: RecordId,
        *,
        metadata: Mapping[str, object] | None = None,
        private: bool | None = None,
    ) -> Record:
        """Replace the metadata and/or the private flag (``None``: unchanged)."""
        ...

    async def delete(self, record_id: RecordId) -> Record | None:
        """Remove the record and return what it was; ``None`` if there was none."""
        ...

    async def delete_owner(self, owner: str, *, batch: int = 500) -> OwnerDeletion:
        """Remove up to ``batch`` of the owner's records, oldest first. Call again
        while ``more`` (resumable: each batch is its own transaction)."""
        ...

    async def count_by_image(self, image_id: ImageId) -> int:
        """How many records, of any owner, name ``image_id`` (asks every shard
        server; ``RecordStoreUnavailable`` unless every one answers)."""
        ...

    async def count_by_image_visibility(self, image_id: ImageId) -> tuple[int, int]:
        """(public, private) records, of any owner, naming ``image_id`` (asks every
        shard server, like ``count_by_image``). The image is private when the
        first is 0 and the second is not (``server.privacy``)."""
        ...

    async def list_by_image(self, image_id: ImageId, *, limit: int = 1000) -> list[Record]:
        """Up to ``limit`` records of any owner naming ``image_id``, oldest first
        (asks every shard server)."""
        ...

    async def ping(self) -> None:
        """``RecordStoreUnavailable`` unless every shard server answers and has the
        schema this code needs (``pinhole db upgrade`` applies it)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WindowCount:
    """One subject's requests in its current fixed window, the one just counted included."""

    count: int
    # Until the window ends and the count starts again from zero.
    reset_seconds: float


@runtime_checkable
class RateLimiter(Protocol):
    """Fixed-window request counters by key (``pinhole.cache.rate_limit``: Redis,
    shared by every process; memory, one process). Quotas and what a refusal
    says are the caller's (``pinhole.rate_limits``); this only counts.

    Error contract: ``CacheUnavailable`` for any failure of the counter's store,
    within the cache's short deadline; the caller decides what an unknown count
    means (Pinhole lets the request through). Nothing else escapes an adapter."""

    async def hit(self, key: str, window_seconds: float) -> WindowCount:
        """Count one request against ``key``. The first hit of a key opens a window
        of ``window_seconds``; hits until it ends add to its count, atomically
        across every process that shares the store."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
