"""A ``RecordStore`` over several shard servers, routed by virtual shard.

Like the blob shard map (``pinhole.sharding``, whose ranges, moves and phases
this reuses): ranges of the 4096 virtual shards map to named servers, unlisted
shards live on "default". An owner's shard comes from the owner name and a
record's from its id, so every call but the by-image ones goes to exactly one
server, and a server that is down fails only the calls that need it. By-image
calls ask every server at once and fail (naming the server) unless all answer:
a count that silently skipped a server would let the last-record sweep delete an
image that still has records.

Settings seed the map; the live map is a control document on the "default"
server (``pinhole.records.control``) that ``pinhole db migrate`` rewrites as a
move goes through its phases, reread every ``refresh_seconds``. A shard being
moved is routed by its phase:

- ``copying``: reads from the source; every write runs on the source, which
  stays the shard's one authority (its unique aliases, its row locks), and is
  mirrored to the target inside the source's transaction (``sql.mirroring``).
- ``flipped``: reads from the target, which has every committed write; writes
  as in ``copying``, so a process that has not reread the map yet still reads
  fresh rows from the source.
- ``cleaning``: the target alone. The migrator fenced the source's shards
  before it wrote this phase, so a process still routing by ``flipped`` has its
  write refused (``ShardFenced``), rereads the map and writes to the target: at
  no moment do two servers take writes of a shard as its authority.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pinhole.domain.ids import ImageId
from pinhole.domain.quota import Quota, Usage
from pinhole.domain.record import (
    OwnerDeletion,
    Record,
    RecordId,
    RecordPage,
    owner_shard,
    record_shard,
    validate_owner,
)
from pinhole.errors import RecordStoreUnavailable
from pinhole.records.control import SqlControlStore
from pinhole.records.sql import ShardFenced, SqlRecordStore, mirroring
from pinhole.sharding import DEFAULT_STORE, ShardMap, ShardMapError, load_shard_map

log = logging.getLogger("pinhole.records.sharded")

_T = TypeVar("_T")
# A write refused by a fence rereads the map and tries again, for about 3 s in
# all: the migrator writes the next phase milliseconds after the fence.
_FENCE_WAITS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5)


@dataclass(frozen=True)
class RecordRoute:
    """Where one shard's records are read, written (the authority) and mirrored."""

    read: str
    write: str
    mirror: str | None = None


def record_route(shard_map: ShardMap, shard: int) -> RecordRoute:
    move = shard_map.moving(shard)
    if move is None:
        owner = shard_map.owner(shard)
        return RecordRoute(owner, owner)
    if move.phase == "copying":
        return RecordRoute(move.source, move.source, move.target)
    if move.phase == "flipped":
        return RecordRoute(move.target, move.source, move.target)
    return RecordRoute(move.target, move.target)


class ShardedRecordStore:
    """Routes by the live map (seeded by ``shard_map``) to ``servers``, which must
    include "default"; the map is reread once it is ``refresh_seconds`` old."""

    def __init__(
        self,
        servers: Mapping[str, SqlRecordStore],
        shard_map: ShardMap,
        *,
        refresh_seconds: float = 5.0,
    ) -> None:
        if DEFAULT_STORE not in servers:
            raise ValueError("a sharded record store needs a server named 'default'")
        missing = {name for name in shard_map.ranges.values()} - set(servers)
        if missing:
            raise ValueError(f"the record shard map names servers {sorted(missing)} not given")
        self.servers = dict(servers)
        self.seed = shard_map
        self.refresh_seconds = refresh_seconds
        self.control = SqlControlStore(self.servers[DEFAULT_STORE])
        self._map = shard_map
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ShardedRecordStore({self.servers!r})"

    async def shard_map(self, *, fresh: bool = False) -> ShardMap:
        """The live map, reread if older than ``refresh_seconds`` (or ``fresh``)."""
        loaded_at = self._loaded_at
        if (
            not fresh
            and loaded_at is not None
            and time.monotonic() - loaded_at < self.refresh_seconds
        ):
            return self._map
        async with self._lock:
            if not fresh and self._loaded_at is not None and self._loaded_at != loaded_at:
                return self._map  # another task reread it while we waited
            started = time.monotonic()
            try:
                loaded = await load_shard_map(self.control, self.seed)
            except (RecordStoreUnavailable, ShardMapError) as exc:
                if self._loaded_at is None:
                    # Routing by the seed could miss a move under way (a write
                    # not mirrored is lost when the move completes): refuse.
                    raise RecordStoreUnavailable(
                        None, DEFAULT_STORE, f"the live record shard map cannot be read: {exc}"
                    ) from exc
                log.warning("record shard map reload failed", extra={"error": str(exc)})
                return self._map
            if loaded.version != self._map.version:
                log.info("record shard map changed", extra={"version": loaded.version})
            self._map, self._loaded_at = loaded, started
            return loaded

    def server_for_shard(self, shard: int) -> str:
        """The server reads of ``shard`` go to, by the map last read."""
        return record_route(self._map, shard).read

    def _server(self, name: str, shard: int | None) -> SqlRecordStore:
        server = self.servers.get(name)
        if server is None:
            # Refusing is safer than writing where nobody will look.
            raise RecordStoreUnavailable(
                shard,
                name,
                "the live record shard map routes here, but PINHOLE_RECORD_SHARDS__SERVERS "
                "does not define this server in this process",
            )
        return server

    async def _read(self, shard: int) -> SqlRecordStore:
        route = record_route(await self.shard_map(), shard)
        return self._server(route.read, shard)

    async def _write(self, shard: int, op: Callable[[SqlRecordStore], Awaitable[_T]]) -> _T:
        fresh = False
        for wait in (*_FENCE_WAITS, None):
            route = record_route(await self.shard_map(fresh=fresh), shard)
            server = self._server(route.write, shard)
            try:
                if route.mirror is None:
                    return await op(server)
                with mirroring(self._server(route.mirror, shard)):
                    return await op(server)
            except ShardFenced:
                if wait is None:
                    raise RecordStoreUnavailable(
                        shard, route.write, "the shard is being handed over to another server"
                    ) from None
                await asyncio.sleep(wait)
                fresh = True
        raise AssertionError("unreachable")  # pragma: no cover

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
        validate_owner(owner)
        return await self._write(
            owner_shard(owner),
            lambda s: s.create(
                owner,
                image_id,
                metadata=metadata,
                alias=alias,
                private=private,
                size_bytes=size_bytes,
                quota=quota,
            ),
        )

    async def usage(self, owner: str) -> Usage:
        validate_owner(owner)
        return await (await self._read(owner_shard(owner))).usage(owner)

    async def get(self, record_id: RecordId) -> Record:
        return await (await self._read(record_shard(record_id))).get(record_id)

    async def list_by_owner(
        self, owner: str, *, limit: int = 100, cursor: str | None = None
    ) -> RecordPage:
        validate_owner(owner)
        server = await self._read(owner_shard(owner))
        return await server.list_by_owner(owner, limit=limit, cursor=cursor)

    async def get_by_alias(self, owner: str, alias: str) -> Record:
        validate_owner(owner)
        return await (await self._read(owner_shard(owner))).get_by_alias(owner, alias)

    async def set_alias(self, record_id: RecordId, alias: str, *, move: bool = False) -> Record:
        return await self._write(
            record_shard(record_id), lambda s: s.set_alias(record_id, alias, move=move)
        )

    async def clear_alias(self, record_id: RecordId) -> Record:
        return await self._write(record_shard(record_id), lambda s: s.clear_alias(record_id))

    async def update(
        self,
        record_id: RecordId,
        *,
        metadata: Mapping[str, object] | None = None,
        private: bool | None = None,
    ) -> Record:
        return await self._write(
            record_shard(record_id),
            lambda s: s.update(record_id, metadata=metadata, private=private),
        )

    async def delete(self, record_id: RecordId) -> Record | None:
        return await self._write(record_shard(record_id), lambda s: s.delete(record_id))

    async def delete_owner(self, owner: str, *, batch: int = 500) -> OwnerDeletion:
        validate_owner(owner)
        return await self._write(owner_shard(owner), lambda s: s.delete_owner(owner, batch=batch))

    async def count_by_image(self, image_id: ImageId) -> int:
        """Each shard counted once, on the server its reads go to (a move has it
        on two servers for a while)."""
        shard_map = await self.shard_map()
        names = sorted(self.servers)
        per_server = await asyncio.gather(
            *(self.servers[name].count_by_image_per_shard(image_id) for name in names)
        )
        return sum(
            count
            for name, counts in zip(names, per_server, strict=True)
            for shard, count in counts.items()
            if record_route(shard_map, shard).read == name
        )

    async def count_by_image_visibility(self, image_id: ImageId) -> tuple[int, int]:
        """Like ``count_by_image``: each shard once, where its reads go."""
        shard_map = await self.shard_map()
        names = sorted(self.servers)
        per_server = await asyncio.gather(
            *(self.servers[name].count_by_image_visibility_per_shard(image_id) for name in names)
        )
        served = [
            counts
            for name, shards in zip(names, per_server, strict=True)
            for shard, counts in shards.items()
            if record_route(shard_map, shard).read == name
        ]
        return sum(p for p, _ in served), sum(q for _, q in served)

    async def list_by_image(self, image_id: ImageId, *, limit: int = 1000) -> list[Record]:
        shard_map = await self.shard_map()
        names = sorted(self.servers)
        found = await asyncio.gather(
            *(self.servers[name].list_by_image(image_id, limit=limit) for name in names)
        )
        served = [
            [r for r in records if record_route(shard_map, r.shard).read == name]
            for name, records in zip(names, found, strict=True)
        ]
        merged = heapq.merge(*served, key=lambda r: (r.created_us, r.id))
        return [record for _, record in zip(range(limit), merged, strict=False)]

    async def ping(self) -> None:
        """Every server, and the live map; the first failure (in server-name
        order) is raised."""
        names = sorted(self.servers)
        results = await asyncio.gather(
            *(self.servers[name].ping() for name in names), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await self.shard_map()

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.servers.values()))
