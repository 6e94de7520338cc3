"""A BlobStore decorator that counts and times every operation, for any adapter."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

from metrics.definitions import STORAGE_OPS, STORAGE_SECONDS
from pinhole.errors import ObjectNotFound
from pinhole.ports import BlobStore, ObjectInfo, StoredObject


@contextmanager
def _measured(op: str) -> Iterator[None]:
    started = time.perf_counter()
    result = "ok"
    try:
        yield
    except ObjectNotFound:
        result = "not_found"
        raise
    except Exception:
        result = "error"
        raise
    finally:
        STORAGE_OPS.labels(op, result).inc()
        STORAGE_SECONDS.labels(op, result).observe(time.perf_counter() - started)


class InstrumentedBlobStore:
    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner

    async def put(
        self, key: str, body: bytes, *, content_type: str, if_absent: bool = False
    ) -> bool:
        with _measured("put"):
            return await self.inner.put(key, body, content_type=content_type, if_absent=if_absent)

    async def put_file(
        self, key: str, path: Path, *, content_type: str, if_absent: bool = False
    ) -> bool:
        with _measured("put"):
            return await self.inner.put_file(
                key, path, content_type=content_type, if_absent=if_absent
            )

    async def get(self, key: str) -> StoredObject:
        with _measured("get"):
            return await self.inner.get(key)

    async def head(self, key: str) -> ObjectInfo | None:
        with _measured("head"):
            return await self.inner.head(key)

    async def delete(self, key: str) -> None:
        with _measured("delete"):
            await self.inner.delete(key)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        with _measured("list"):
            async for info in self.inner.list(prefix):
                yield info

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()
