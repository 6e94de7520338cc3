"""The record store's control documents as a ``pinhole.sharding.ControlStore``.

The live record shard map, ``pinhole db migrate``'s cursors and its lease live
in the ``control_documents`` table of the "default" record server, beside the
records they route: every process that has records can read them, the map
needs nothing but the record settings, and a record move never depends on the
blob store being up. ``put(if_absent=True)`` is an INSERT on the primary key,
which is atomic: the one thing the lease relies on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pinhole.errors import ObjectNotFound
from pinhole.ports import ObjectInfo, StoredObject
from pinhole.records.sql import SqlRecordStore


class SqlControlStore:
    """Named documents in one record server's ``control_documents`` table."""

    def __init__(self, server: SqlRecordStore) -> None:
        self.server = server

    def __repr__(self) -> str:
        return f"SqlControlStore({self.server!r})"

    async def put(
        self, key: str, body: bytes, *, content_type: str, if_absent: bool = False
    ) -> bool:
        return await self.server.control_put(key, body, if_absent=if_absent)

    async def get(self, key: str) -> StoredObject:
        found = await self.server.control_get(key)
        if found is None:
            raise ObjectNotFound(key)
        body, written_us = found
        return StoredObject(_info(key, len(body), written_us), body)

    async def head(self, key: str) -> ObjectInfo | None:
        found = await self.server.control_get(key)
        return None if found is None else _info(key, len(found[0]), found[1])

    async def delete(self, key: str) -> None:
        await self.server.control_delete(key)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        for name, size, written_us in await self.server.control_list(prefix):
            yield _info(name, size, written_us)


def _info(key: str, size: int, written_us: int) -> ObjectInfo:
    return ObjectInfo(key, size, written_us / 1e6, "application/json")
