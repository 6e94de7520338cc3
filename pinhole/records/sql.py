"""The record store's logic in SQL, once, for every SQL adapter.

An adapter (``sqlite``, ``mariadb``) supplies transactions on one shard server
(``SqlRecordStore._transaction``) and translates its driver's exceptions into
``pinhole.errors``: ``DuplicateKey`` for a unique index, ``RecordStoreUnavailable``
for the rest. Everything else, from validation to keyset pagination, is here.
Statements use ``%s`` placeholders; the SQLite transaction rewrites them.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from pinhole.domain.ids import ImageId, parse_image_id
from pinhole.domain.record import (
    OwnerDeletion,
    Record,
    RecordId,
    RecordIdGenerator,
    RecordPage,
    decode_cursor,
    decode_metadata,
    encode_cursor,
    encode_metadata,
    now_us,
    owner_shard,
    record_shard,
    validate_alias,
    validate_owner,
)
from pinhole.errors import (
    AliasNotFound,
    AliasTaken,
    RecordNotFound,
    RecordStoreUnavailable,
)
from pinhole.records.schema import LATEST, Dialect, UpgradeResult

_T = TypeVar("_T")

PROCESS_IDS = RecordIdGenerator()
# The unique indexes a write can hit, as DuplicateKey names them.
PRIMARY = "PRIMARY"
ALIAS_INDEX = "records_owner_alias"
COLUMNS = "id, owner, image_id, metadata, alias, is_private, created_us, updated_us"
MAX_PAGE = 1000
# A fresh id for a create whose id another process made in the same millisecond.
_ID_ATTEMPTS = 5


class DuplicateKey(Exception):
    """An insert or update hit a unique index: ``index`` is "PRIMARY" or an index name."""

    def __init__(self, index: str) -> None:
        super().__init__(index)
        self.index = index


class Tx(Protocol):
    """One open transaction on one shard server."""

    # " FOR UPDATE" where the dialect locks rows it reads; "" where a write
    # transaction already holds the database (SQLite's BEGIN IMMEDIATE).
    for_update: str

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    async def execute(self, sql: str, params: Sequence[object] = ()) -> None: ...

    async def lock(self, name: str) -> None:
        """Serialise with every other transaction that locks ``name``, until this
        one ends. Row locks alone let concurrent claims of one alias deadlock in
        InnoDB (each holds the gap the other inserts into)."""
        ...


def record_from_row(row: Sequence[Any]) -> Record:
    rid, owner, image_id, metadata, alias, private, created_us, updated_us = row
    return Record(
        id=RecordId(int(rid)),
        owner=str(owner),
        image_id=ImageId(str(image_id)),
        created_us=int(created_us),
        updated_us=int(updated_us),
        metadata=decode_metadata(str(metadata)),
        alias=None if alias is None else str(alias),
        private=bool(private),
    )


def _alias_lock(owner: str, alias: str) -> str:
    # MariaDB's lock names are at most 64 characters; owner and alias are 64 each.
    digest = hashlib.sha256(f"{owner}\0{alias}".encode()).hexdigest()[:40]
    return f"pinhole.alias.{digest}"


def _check_limit(limit: int, most: int = MAX_PAGE) -> int:
    if not 1 <= limit <= most:
        raise ValueError(f"limit must be 1..{most}, not {limit}")
    return limit


async def _locked_record(tx: Tx, record_id: RecordId) -> Record:
    rows = await tx.fetchall(
        f"SELECT {COLUMNS} FROM records WHERE id = %s{tx.for_update}", [record_id]
    )
    if not rows:
        raise RecordNotFound(f"no record {record_id}")
    return record_from_row(rows[0])


class SqlRecordStore(ABC):
    """``RecordStore`` on one shard server. ``name`` names the server in errors."""

    dialect: Dialect

    def __init__(self, name: str) -> None:
        self.name = name
        # One generator per process, not per store: ids of a shard then only
        # ever increase in this process, however many stores it opens.
        self.ids = PROCESS_IDS

    # --- What an adapter provides. -----------------------------------------

    @abstractmethod
    async def _transaction(
        self, shard: int | None, body: Callable[[Tx], Awaitable[_T]], *, write: bool
    ) -> _T:
        """Run ``body`` in one transaction within the store's deadline and commit;
        roll back if it raises. Driver errors come out as ``DuplicateKey`` or
        ``RecordStoreUnavailable`` naming ``shard``; anything ``body`` raises
        itself comes out as it is."""

    @abstractmethod
    async def upgrade_schema(self) -> UpgradeResult:
        """Apply every migration this server has not had (``pinhole db upgrade``)."""

    @abstractmethod
    async def close(self) -> None: ...

    def unavailable(self, shard: int | None, reason: str) -> RecordStoreUnavailable:
        return RecordStoreUnavailable(shard, self.name, reason)

    # --- The port. ---------------------------------------------------------

    async def create(
        self,
        owner: str,
        image_id: ImageId,
        *,
        metadata: Mapping[str, object] | None = None,
        alias: str | None = None,
        private: bool = False,
    ) -> Record:
        validate_owner(owner)
        image_id = parse_image_id(image_id)
        text = encode_metadata({} if metadata is None else metadata)
        if alias is not None:
            validate_alias(alias)
        shard = owner_shard(owner)
        for _ in range(_ID_ATTEMPTS):
            record_id = self.ids.new(shard)
            created = now_us()
            row = (record_id, owner, image_id, text, alias, private, created, created)

            async def insert(tx: Tx, row: tuple[object, ...] = row) -> None:
                await tx.execute(
                    f"INSERT INTO records ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    row,
                )

            try:
                await self._transaction(shard, insert, write=True)
            except DuplicateKey as exc:
                if exc.index == PRIMARY:
                    continue
                if exc.index != ALIAS_INDEX:
                    raise
                raise AliasTaken(
                    f"owner {owner!r} already has a record with alias {alias!r}"
                ) from None
            return record_from_row(row)
        raise self.unavailable(shard, "record id collisions on every attempt")

    async def get(self, record_id: RecordId) -> Record:
        async def read(tx: Tx) -> Record:
            rows = await tx.fetchall(f"SELECT {COLUMNS} FROM records WHERE id = %s", [record_id])
            if not rows:
                raise RecordNotFound(f"no record {record_id}")
            return record_from_row(rows[0])

        return await self._transaction(record_shard(record_id), read, write=False)

    async def list_by_owner(
        self, owner: str, *, limit: int = 100, cursor: str | None = None
    ) -> RecordPage:
        validate_owner(owner)
        _check_limit(limit)
        where = "owner = %s"
        params: list[object] = [owner]
        if cursor is not None:
            created_us, after_id = decode_cursor(cursor)
            where += " AND (created_us < %s OR (created_us = %s AND id < %s))"
            params += [created_us, created_us, after_id]

        async def read(tx: Tx) -> list[tuple[Any, ...]]:
            return await tx.fetchall(
                f"SELECT {COLUMNS} FROM records WHERE {where}"
                " ORDER BY created_us DESC, id DESC LIMIT %s",
                [*params, limit + 1],
            )

        rows = await self._transaction(owner_shard(owner), read, write=False)
        records = [record_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        last = records[-1] if records else None
        next_cursor = encode_cursor(last.created_us, last.id) if more and last else None
        return RecordPage(records, next_cursor)

    async def get_by_alias(self, owner: str, alias: str) -> Record:
        validate_owner(owner)
        validate_alias(alias)

        async def read(tx: Tx) -> Record:
            rows = await tx.fetchall(
                f"SELECT {COLUMNS} FROM records WHERE owner = %s AND alias = %s", [owner, alias]
            )
            if not rows:
                raise AliasNotFound(f"owner {owner!r} has no record with alias {alias!r}")
            return record_from_row(rows[0])

        return await self._transaction(owner_shard(owner), read, write=False)

    async def set_alias(self, record_id: RecordId, alias: str, *, move: bool = False) -> Record:
        validate_alias(alias)

        async def claim(tx: Tx) -> Record:
            record = await _locked_record(tx, record_id)
            if record.alias == alias:
                return record
            await tx.lock(_alias_lock(record.owner, alias))
            now = now_us()
            if move:
                await tx.execute(
                    "UPDATE records SET alias = NULL, updated_us = %s"
                    " WHERE owner = %s AND alias = %s AND id <> %s",
                    [now, record.owner, alias, record_id],
                )
            await tx.execute(
                "UPDATE records SET alias = %s, updated_us = %s WHERE id = %s",
                [alias, now, record_id],
            )
            return replace(record, alias=alias, updated_us=now)

        try:
            return await self._transaction(record_shard(record_id), claim, write=True)
        except DuplicateKey as exc:
            if exc.index != ALIAS_INDEX:
                raise
            raise AliasTaken(f"another record of this owner has alias {alias!r}") from None

    async def clear_alias(self, record_id: RecordId) -> Record:
        async def clear(tx: Tx) -> Record:
            record = await _locked_record(tx, record_id)
            if record.alias is None:
                return record
            now = now_us()
            await tx.execute(
                "UPDATE records SET alias = NULL, updated_us = %s WHERE id = %s", [now, record_id]
            )
            return replace(record, alias=None, updated_us=now)

        return await self._transaction(record_shard(record_id), clear, write=True)

    async def update(
        self,
        record_id: RecordId,
        *,
        metadata: Mapping[str, object] | None = None,
        private: bool | None = None,
    ) -> Record:
        text = None if metadata is None else encode_metadata(metadata)

        async def change(tx: Tx) -> Record:
            record = await _locked_record(tx, record_id)
            now = now_us()
            new_text = encode_metadata(record.metadata) if text is None else text
            new_private = record.private if private is None else private
            await tx.execute(
                "UPDATE records SET metadata = %s, is_private = %s, updated_us = %s WHERE id = %s",
                [new_text, new_private, now, record_id],
            )
            return replace(
                record, metadata=decode_metadata(new_text), private=new_private, updated_us=now
            )

        return await self._transaction(record_shard(record_id), change, write=True)

    async def delete(self, record_id: RecordId) -> Record | None:
        async def remove(tx: Tx) -> Record | None:
            try:
                record = await _locked_record(tx, record_id)
            except RecordNotFound:
                return None
            await tx.execute("DELETE FROM records WHERE id = %s", [record_id])
            return record

        return await self._transaction(record_shard(record_id), remove, write=True)

    async def delete_owner(self, owner: str, *, batch: int = 500) -> OwnerDeletion:
        validate_owner(owner)
        _check_limit(batch, 10_000)

        async def remove(tx: Tx) -> OwnerDeletion:
            rows = await tx.fetchall(
                "SELECT id, image_id FROM records WHERE owner = %s"
                f" ORDER BY created_us, id LIMIT %s{tx.for_update}",
                [owner, batch],
            )
            if rows:
                marks = ", ".join(["%s"] * len(rows))
                await tx.execute(
                    f"DELETE FROM records WHERE id IN ({marks})", [row[0] for row in rows]
                )
            left = await tx.fetchall("SELECT 1 FROM records WHERE owner = %s LIMIT 1", [owner])
            return OwnerDeletion(
                removed=len(rows),
                image_ids=frozenset(ImageId(str(row[1])) for row in rows),
                more=bool(left),
            )

        return await self._transaction(owner_shard(owner), remove, write=True)

    async def count_by_image(self, image_id: ImageId) -> int:
        image_id = parse_image_id(image_id)

        async def count(tx: Tx) -> int:
            rows = await tx.fetchall("SELECT COUNT(*) FROM records WHERE image_id = %s", [image_id])
            return int(rows[0][0])

        return await self._transaction(None, count, write=False)

    async def list_by_image(self, image_id: ImageId, *, limit: int = 1000) -> list[Record]:
        image_id = parse_image_id(image_id)
        _check_limit(limit, 10_000)

        async def read(tx: Tx) -> list[tuple[Any, ...]]:
            return await tx.fetchall(
                f"SELECT {COLUMNS} FROM records WHERE image_id = %s"
                " ORDER BY created_us, id LIMIT %s",
                [image_id, limit],
            )

        rows = await self._transaction(None, read, write=False)
        return [record_from_row(row) for row in rows]

    async def schema_version(self) -> int:
        """The newest migration applied here; 0 for a server never upgraded."""

        async def read(tx: Tx) -> int:
            rows = await tx.fetchall(_VERSION_QUERY[self.dialect])
            if not rows[0][0]:
                return 0
            found = await tx.fetchall("SELECT MAX(version) FROM schema_migrations")
            return int(found[0][0] or 0)

        return await self._transaction(None, read, write=False)

    async def ping(self) -> None:
        version = await self.schema_version()
        if version < LATEST:
            raise self.unavailable(
                None,
                f"schema version {version}, this code needs {LATEST}: run `pinhole db upgrade`",
            )


_VERSION_QUERY: dict[Dialect, str] = {
    "sqlite": "SELECT COUNT(*) FROM sqlite_master"
    " WHERE type = 'table' AND name = 'schema_migrations'",
    "mariadb": "SELECT COUNT(*) FROM information_schema.tables"
    " WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'",
}
