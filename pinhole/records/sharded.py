"""A ``RecordStore`` over several shard servers, routed by virtual shard.

Like the blob shard map (``pinhole.sharding``, whose ranges and validation this
reuses): ranges of the 4096 virtual shards map to named servers, unlisted shards
live on "default". An owner's shard comes from the owner name and a record's
from its id, so every call but the by-image ones goes to exactly one server, and
a server that is down fails only the calls that need it. By-image calls ask
every server at once and fail (naming the server) unless all answer: a count
that silently skipped a server would let the last-record sweep delete an image
that still has records.

Moving shards between servers live (copy, dual-write, flip, clean, as ``pinhole
migrate`` does for blobs) is not built yet: the map here is the settings' map.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Mapping

from pinhole.domain.ids import ImageId
from pinhole.domain.record import (
    OwnerDeletion,
    Record,
    RecordId,
    RecordPage,
    owner_shard,
    record_shard,
    validate_owner,
)
from pinhole.ports import RecordStore
from pinhole.sharding import DEFAULT_STORE, ShardMap


class ShardedRecordStore:
    """Routes by ``shard_map`` (its ranges) to ``servers``, which must include "default"."""

    def __init__(self, servers: Mapping[str, RecordStore], shard_map: ShardMap) -> None:
        if DEFAULT_STORE not in servers:
            raise ValueError("a sharded record store needs a server named 'default'")
        missing = {name for name in shard_map.ranges.values()} - set(servers)
        if missing:
            raise ValueError(f"the record shard map names servers {sorted(missing)} not given")
        self.servers = dict(servers)
        self.shard_map = shard_map

    def __repr__(self) -> str:
        return f"ShardedRecordStore({self.servers!r})"

    def server_for_shard(self, shard: int) -> str:
        return self.shard_map.owner(shard)

    def _for_owner(self, owner: str) -> RecordStore:
        validate_owner(owner)
        return self.servers[self.shard_map.owner(owner_shard(owner))]

    def _for_record(self, record_id: RecordId) -> RecordStore:
        return self.servers[self.shard_map.owner(record_shard(record_id))]

    async def create(
        self,
        owner: str,
        image_id: ImageId,
        *,
        metadata: Mapping[str, object] | None = None,
        alias: str | None = None,
        private: bool = False,
    ) -> Record:
        return await self._for_owner(owner).create(
            owner, image_id, metadata=metadata, alias=alias, private=private
        )

    async def get(self, record_id: RecordId) -> Record:
        return await self._for_record(record_id).get(record_id)

    async def list_by_owner(
        self, owner: str, *, limit: int = 100, cursor: str | None = None
    ) -> RecordPage:
        return await self._for_owner(owner).list_by_owner(owner, limit=limit, cursor=cursor)

    async def get_by_alias(self, owner: str, alias: str) -> Record:
        return await self._for_owner(owner).get_by_alias(owner, alias)

    async def set_alias(self, record_id: RecordId, alias: str, *, move: bool = False) -> Record:
        return await self._for_record(record_id).set_alias(record_id, alias, move=move)

    async def clear_alias(self, record_id: RecordId) -> Record:
        return await self._for_record(record_id).clear_alias(record_id)

    async def update(
        self,
        record_id: RecordId,
        *,
        metadata: Mapping[str, object] | None = None,
        private: bool | None = None,
    ) -> Record:
        return await self._for_record(record_id).update(
            record_id, metadata=metadata, private=private
        )

    async def delete(self, record_id: RecordId) -> Record | None:
        return await self._for_record(record_id).delete(record_id)

    async def delete_owner(self, owner: str, *, batch: int = 500) -> OwnerDeletion:
        return await self._for_owner(owner).delete_owner(owner, batch=batch)

    async def count_by_image(self, image_id: ImageId) -> int:
        counts = await asyncio.gather(*(s.count_by_image(image_id) for s in self.servers.values()))
        return sum(counts)

    async def list_by_image(self, image_id: ImageId, *, limit: int = 1000) -> list[Record]:
        found = await asyncio.gather(
            *(s.list_by_image(image_id, limit=limit) for s in self.servers.values())
        )
        merged = heapq.merge(*found, key=lambda r: (r.created_us, r.id))
        return [record for _, record in zip(range(limit), merged, strict=False)]

    async def ping(self) -> None:
        """Every server; the first failure (in server-name order) is raised."""
        names = sorted(self.servers)
        results = await asyncio.gather(
            *(self.servers[name].ping() for name in names), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.servers.values()))
