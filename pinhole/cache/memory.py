"""An in-process LRU bounded by the total bytes of its values.

Byte bounds rather than entry counts because variants range from a few KB to
over a MB; a count bound would make memory use unpredictable. There are no
locks: every method runs to completion without awaiting, so on one event loop
no other coroutine can observe a half-done update.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

V = TypeVar("V")


class _Slot(NamedTuple, Generic[V]):
    value: V
    size: int
    expires_at: float  # time.monotonic() seconds


class MemoryLru(Generic[V]):
    """A byte-bounded LRU of any values, sized by ``size_of``; never awaits.

    The edge's L1 holds decoded variants in one, so a hit costs no unpacking.
    Expired entries are misses and are dropped when read; ones never read again
    stay until LRU pressure evicts them, which keeps ``set`` O(1) amortised.
    """

    def __init__(
        self, max_bytes: int, max_object_bytes: int | None, *, size_of: Callable[[V], int]
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        if max_object_bytes is not None and max_object_bytes <= 0:
            raise ValueError(f"max_object_bytes must be > 0, not {max_object_bytes}")
        self.max_bytes = max_bytes
        self.max_object_bytes = max_object_bytes
        self._size_of = size_of
        self._entries: OrderedDict[str, _Slot[V]] = OrderedDict()
        self._bytes_used = 0

    @property
    def bytes_used(self) -> int:
        """Total length of the values held, expired-but-unread ones included."""
        return self._bytes_used

    def __len__(self) -> int:
        return len(self._entries)

    def get_nowait(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= time.monotonic():
            self._discard(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def set_nowait(self, key: str, value: V, ttl_seconds: int) -> None:
        _check_ttl(ttl_seconds)
        # Drop the old value first: if the new one is refused, a stale value must
        # not keep answering for the key.
        self._discard(key)
        size = self._size_of(value)
        # max_bytes == 0 means the tier is off; without this, empty values would
        # pile up unbounded since they cost nothing against the byte budget.
        if self.max_bytes == 0 or size > self.max_bytes:
            return
        if self.max_object_bytes is not None and size > self.max_object_bytes:
            return
        self._entries[key] = _Slot(value, size, time.monotonic() + ttl_seconds)
        self._bytes_used += size
        while self._bytes_used > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes_used -= evicted.size

    def delete_nowait(self, *keys: str) -> None:
        for key in keys:
            self._discard(key)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes_used = 0

    def _discard(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes_used -= entry.size


class MemoryHotCache(MemoryLru[bytes]):
    """``HotCache`` in process memory (``pinhole up``'s shared cache)."""

    def __init__(self, max_bytes: int, max_object_bytes: int | None = None) -> None:
        super().__init__(max_bytes, max_object_bytes, size_of=len)

    async def get(self, key: str) -> bytes | None:
        return self.get_nowait(key)

    async def set(self, key: str, value: bytes, *, ttl_seconds: int) -> None:
        self.set_nowait(key, value, ttl_seconds)

    async def delete(self, *keys: str) -> None:
        self.delete_nowait(*keys)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self.clear()


def _check_ttl(ttl_seconds: int) -> None:
    # Redis rejects a non-positive EX; refusing it here too keeps both adapters
    # failing the same way on the same programming error.
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be > 0, not {ttl_seconds}")
