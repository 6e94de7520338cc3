"""The record store's logic in SQL, once, for every SQL adapter.

An adapter (``sqlite``, ``mariadb``) supplies transactions on one shard server
(``SqlRecordStore._transaction``) and translates its driver's exceptions into
``pinhole.errors``: ``DuplicateKey`` for a unique index, ``RecordStoreUnavailable``
for the rest. Everything else, from validation to keyset pagination, is here.
Statements use ``%s`` placeholders; the SQLite transaction rewrites them.
"""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from pinhole.domain.ids import ImageId, parse_image_id
from pinhole.domain.quota import Quota, Usage, exceeded
from pinhole.domain.record import (
    LOCAL_BITS,
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
from pinhole.records.schema import (
    CONTROL_TABLE_NAMES,
    CONTROL_TABLES,
    LATEST,
    Dialect,
    UpgradeResult,
)

_T = TypeVar("_T")

PROCESS_IDS = RecordIdGenerator()
# The unique indexes a write can hit, as DuplicateKey names them.
PRIMARY = "PRIMARY"
ALIAS_INDEX = "records_owner_alias"
COLUMNS = "id, owner, image_id, metadata, alias, is_private, created_us, updated_us"
# A whole row, as a shard move copies and mirrors it: the record and the bytes
# its owner's usage counts for it (schema migration 2).
ROW_COLUMNS = f"{COLUMNS}, size_bytes"
MAX_PAGE = 1000
# A fresh id for a create whose id another process made in the same millisecond.
_ID_ATTEMPTS = 5


class DuplicateKey(Exception):
    """An insert or update hit a unique index: ``index`` is "PRIMARY" or an index name."""

    def __init__(self, index: str) -> None:
        super().__init__(index)
        self.index = index


class ShardFenced(Exception):
    """A write would make this server the authority of a shard whose move has
    passed that authority to the target (``pinhole db migrate``): route again by
    a fresh map."""

    def __init__(self, shard: int, server: str) -> None:
        super().__init__(f"shard {shard:03x} is fenced on server {server!r}: it has moved")
        self.shard = shard
        self.server = server


# Set by the sharded store around a write on a shard being moved: the server the
# write's rows are mirrored to, inside the write's own transaction.
_MIRROR: ContextVar[SqlRecordStore | None] = ContextVar("pinhole_record_mirror", default=None)


@contextlib.contextmanager
def mirroring(target: SqlRecordStore) -> Iterator[None]:
    """Every write made in this context on a source server also lands on
    ``target``, before the source commits, and first checks the source's fence.

    The row is written to the target while the source still holds its row lock,
    so every change of a row reaches the target in the order the source made
    them; the copy (``copy_range``) takes the same locks, so a write and the
    copy of its row never overtake each other."""
    token = _MIRROR.set(target)
    try:
        yield
    finally:
        _MIRROR.reset(token)


def shard_ids(first: int, last: int) -> tuple[int, int]:
    """The record ids of shards ``first..last``: (lowest, highest), both included.
    An id's top bits are its shard, so id order is (shard, id) order."""
    return first << LOCAL_BITS, ((last + 1) << LOCAL_BITS) - 1


class Tx(Protocol):
    """One open transaction on one shard server."""

    # " FOR UPDATE" where the dialect locks rows it reads; "" where a write
    # transaction already holds the database (SQLite's BEGIN IMMEDIATE).
    for_update: str
    # " LOCK IN SHARE MODE", likewise: many readers, no writer.
    for_share: str

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


def _quota_lock(owner: str) -> str:
    digest = hashlib.sha256(owner.encode()).hexdigest()[:40]
    return f"pinhole.quota.{digest}"


async def _usage(tx: Tx, owner: str, lock: str) -> Usage:
    # A sum over the owner's records (the index records_owner_size covers it),
    # not a counter beside them: it cannot drift from the records, and a shard
    # move copies it with the rows it is made of.
    rows = await tx.fetchall(
        f"SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM records WHERE owner = %s{lock}",
        [owner],
    )
    return Usage(images=int(rows[0][0]), bytes=int(rows[0][1]))


def _check_limit(limit: int, most: int = MAX_PAGE) -> int:
    if not 1 <= limit <= most:
        raise ValueError(f"limit must be 1..{most}, not {limit}")
    return limit


def _marks(count: int) -> str:
    return ", ".join(["%s"] * count)


_ROW_WIDTH = len(ROW_COLUMNS.split(","))


async def _insert_rows(tx: Tx, rows: Sequence[Sequence[Any]]) -> None:
    """Whole rows (``ROW_COLUMNS``), or records alone (``COLUMNS``: 0 bytes)."""
    for start in range(0, len(rows), 200):
        chunk = rows[start : start + 200]
        width = len(chunk[0])
        columns = ROW_COLUMNS if width == _ROW_WIDTH else COLUMNS
        values = ", ".join([f"({_marks(width)})"] * len(chunk))
        await tx.execute(
            f"INSERT INTO records ({columns}) VALUES {values}",
            [value for row in chunk for value in row],
        )


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

    async def _write(self, shard: int, body: Callable[[Tx, list[int]], Awaitable[_T]]) -> _T:
        """A write transaction on ``shard``; ``body`` lists the ids it changed,
        which are mirrored (``mirroring``) before the commit."""
        mirror = _MIRROR.get()

        async def run(tx: Tx) -> _T:
            touched: list[int] = []
            if mirror is not None:
                fenced = await tx.fetchall(
                    f"SELECT fenced FROM shard_fences WHERE shard = %s{tx.for_share}", [shard]
                )
                if fenced and fenced[0][0]:
                    raise ShardFenced(shard, self.name)
            result = await body(tx, touched)
            if mirror is not None and touched:
                rows = await tx.fetchall(
                    f"SELECT {ROW_COLUMNS} FROM records WHERE id IN ({_marks(len(touched))})",
                    touched,
                )
                await mirror.replace_rows(shard, touched, rows)
            return result

        return await self._transaction(shard, run, write=True)

    # --- The port. ---------------------------------------------------------

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
        image_id = parse_image_id(image_id)
        text = encode_metadata({} if metadata is None else metadata)
        if alias is not None:
            validate_alias(alias)
        if size_bytes < 0:
            raise ValueError(f"size_bytes must be 0 or more, not {size_bytes}")
        shard = owner_shard(owner)
        for _ in range(_ID_ATTEMPTS):
            record_id = self.ids.new(shard)
            created = now_us()
            row = (record_id, owner, image_id, text, alias, private, created, created)

            async def insert(
                tx: Tx,
                touched: list[int],
                row: tuple[object, ...] = row,
                made: int = record_id,
            ) -> None:
                if quota is not None and not quota.unlimited:
                    # One quota check per owner at a time, on the shard's one
                    # authority, against every committed record: concurrent
                    # uploads of one owner from any number of processes cannot
                    # together go over.
                    await tx.lock(_quota_lock(owner))
                    usage = await _usage(tx, owner, tx.for_share)
                    over = quota.refusal(usage, images=1, size=size_bytes)
                    if over is not None:
                        raise exceeded(owner, over, quota, usage)
                await tx.execute(
                    f"INSERT INTO records ({ROW_COLUMNS}) VALUES ({_marks(9)})",
                    (*row, size_bytes),
                )
                touched.append(made)

            try:
                await self._write(shard, insert)
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

    async def usage(self, owner: str) -> Usage:
        """The owner's records and the bytes they count (``pinhole.domain.quota``)."""
        validate_owner(owner)

        async def read(tx: Tx) -> Usage:
            return await _usage(tx, owner, "")

        return await self._transaction(owner_shard(owner), read, write=False)

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
            # The leading "created_us <= c" gives the index a bound to seek to:
            # with the OR alone both engines read the owner's newer records and
            # drop them, so a page cost grew with its depth (bench/records).
            where += " AND created_us <= %s AND (created_us < %s OR id < %s)"
            params += [created_us, created_us, after_id]
        # MariaDB's optimiser sometimes prefers the primary key and sorts; the
        # (owner, created_us, id) index answers the page in order.
        hint = " FORCE INDEX (records_owner_created)" if self.dialect == "mariadb" else ""

        async def read(tx: Tx) -> list[tuple[Any, ...]]:
            return await tx.fetchall(
                f"SELECT {COLUMNS} FROM records{hint} WHERE {where}"
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

        async def claim(tx: Tx, touched: list[int]) -> Record:
            record = await _locked_record(tx, record_id)
            if record.alias == alias:
                return record
            await tx.lock(_alias_lock(record.owner, alias))
            now = now_us()
            touched.append(record_id)
            if move:
                holders = await tx.fetchall(
                    "SELECT id FROM records WHERE owner = %s AND alias = %s AND id <> %s",
                    [record.owner, alias, record_id],
                )
                touched.extend(int(row[0]) for row in holders)
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
            return await self._write(record_shard(record_id), claim)
        except DuplicateKey as exc:
            if exc.index != ALIAS_INDEX:
                raise
            raise AliasTaken(f"another record of this owner has alias {alias!r}") from None

    async def clear_alias(self, record_id: RecordId) -> Record:
        async def clear(tx: Tx, touched: list[int]) -> Record:
            record = await _locked_record(tx, record_id)
            if record.alias is None:
                return record
            now = now_us()
            touched.append(record_id)
            await tx.execute(
                "UPDATE records SET alias = NULL, updated_us = %s WHERE id = %s", [now, record_id]
            )
            return replace(record, alias=None, updated_us=now)

        return await self._write(record_shard(record_id), clear)

    async def update(
        self,
        record_id: RecordId,
        *,
        metadata: Mapping[str, object] | None = None,
        private: bool | None = None,
    ) -> Record:
        text = None if metadata is None else encode_metadata(metadata)

        async def change(tx: Tx, touched: list[int]) -> Record:
            record = await _locked_record(tx, record_id)
            now = now_us()
            touched.append(record_id)
            new_text = encode_metadata(record.metadata) if text is None else text
            new_private = record.private if private is None else private
            await tx.execute(
                "UPDATE records SET metadata = %s, is_private = %s, updated_us = %s WHERE id = %s",
                [new_text, new_private, now, record_id],
            )
            return replace(
                record, metadata=decode_metadata(new_text), private=new_private, updated_us=now
            )

        return await self._write(record_shard(record_id), change)

    async def delete(self, record_id: RecordId) -> Record | None:
        async def remove(tx: Tx, touched: list[int]) -> Record | None:
            try:
                record = await _locked_record(tx, record_id)
            except RecordNotFound:
                return None
            await tx.execute("DELETE FROM records WHERE id = %s", [record_id])
            touched.append(record_id)
            return record

        return await self._write(record_shard(record_id), remove)

    async def delete_owner(self, owner: str, *, batch: int = 500) -> OwnerDeletion:
        validate_owner(owner)
        _check_limit(batch, 10_000)

        async def remove(tx: Tx, touched: list[int]) -> OwnerDeletion:
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
                touched.extend(int(row[0]) for row in rows)
            left = await tx.fetchall("SELECT 1 FROM records WHERE owner = %s LIMIT 1", [owner])
            return OwnerDeletion(
                removed=len(rows),
                image_ids=frozenset(ImageId(str(row[1])) for row in rows),
                more=bool(left),
            )

        return await self._write(owner_shard(owner), remove)

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

    # --- Moving shards (``pinhole db migrate``, ``pinhole.records.sharded``). ----

    async def replace_rows(
        self, shard: int, ids: Sequence[int], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Make the records ``ids`` here exactly ``rows`` (an id not in ``rows`` is
        deleted): how a move's target follows a write on its source."""

        async def put(tx: Tx) -> None:
            await tx.execute(f"DELETE FROM records WHERE id IN ({_marks(len(ids))})", list(ids))
            await _insert_rows(tx, rows)

        await self._replica_write(shard, put)

    async def replace_range(self, after: int, upto: int, rows: Sequence[Sequence[Any]]) -> None:
        """Make the records with ids in (``after``, ``upto``] here exactly ``rows``."""

        async def put(tx: Tx) -> None:
            await tx.execute("DELETE FROM records WHERE id > %s AND id <= %s", [after, upto])
            await _insert_rows(tx, rows)

        await self._replica_write(record_shard(upto), put)

    async def _replica_write(self, shard: int, body: Callable[[Tx], Awaitable[None]]) -> None:
        try:
            await self._transaction(shard, body, write=True)
        except DuplicateKey as exc:
            # The source enforces every unique index; a clash here is a row the
            # source does not have, left by something other than a move.
            raise self.unavailable(
                shard, f"a row here clashes with the source's on {exc.index}"
            ) from None

    async def copy_range(
        self, target: SqlRecordStore, after: int, last: int, limit: int
    ) -> tuple[int, int]:
        """Copy the next ``limit`` records with ids in (``after``, ``last``] to
        ``target``, replacing whatever it has in that span (idempotent); returns
        how many were copied and the id the span ends at (the next ``after``).

        The rows and the gaps between them stay locked here until ``target`` has
        them, so no write to them is mirrored out of order with the copy."""

        async def run(tx: Tx) -> tuple[int, int]:
            rows = await tx.fetchall(
                f"SELECT {ROW_COLUMNS} FROM records WHERE id > %s AND id <= %s"
                f" ORDER BY id LIMIT %s{tx.for_update}",
                [after, last, limit],
            )
            upto = int(rows[-1][0]) if len(rows) == limit else last
            await target.replace_range(after, upto, rows)
            return len(rows), upto

        return await self._transaction(record_shard(after + 1), run, write=True)

    async def delete_range(self, after: int, last: int, limit: int) -> tuple[int, int]:
        """Delete the next ``limit`` records with ids in (``after``, ``last``]:
        how many, and the id the span ends at."""

        async def run(tx: Tx) -> tuple[int, int]:
            rows = await tx.fetchall(
                f"SELECT id FROM records WHERE id > %s AND id <= %s"
                f" ORDER BY id LIMIT %s{tx.for_update}",
                [after, last, limit],
            )
            if rows:
                await tx.execute(
                    f"DELETE FROM records WHERE id IN ({_marks(len(rows))})",
                    [row[0] for row in rows],
                )
            upto = int(rows[-1][0]) if len(rows) == limit else last
            return len(rows), upto

        return await self._transaction(record_shard(after + 1), run, write=True)

    async def count_by_shard(self, first: int, last: int) -> dict[int, int]:
        """Records per virtual shard, for shards ``first..last`` that have any."""
        low, high = shard_ids(first, last)

        async def count(tx: Tx) -> dict[int, int]:
            rows = await tx.fetchall(
                f"SELECT id >> {LOCAL_BITS}, COUNT(*) FROM records"
                f" WHERE id >= %s AND id <= %s GROUP BY id >> {LOCAL_BITS}",
                [low, high],
            )
            return {int(row[0]): int(row[1]) for row in rows}

        return await self._transaction(None, count, write=False)

    async def count_by_image_per_shard(self, image_id: ImageId) -> dict[int, int]:
        """``count_by_image`` per virtual shard, so a sharded store counts each
        shard once, on the server that serves it, while a move has it on two."""
        image_id = parse_image_id(image_id)

        async def count(tx: Tx) -> dict[int, int]:
            rows = await tx.fetchall(
                f"SELECT id >> {LOCAL_BITS}, COUNT(*) FROM records"
                f" WHERE image_id = %s GROUP BY id >> {LOCAL_BITS}",
                [image_id],
            )
            return {int(row[0]): int(row[1]) for row in rows}

        return await self._transaction(None, count, write=False)

    async def count_by_image_visibility(self, image_id: ImageId) -> tuple[int, int]:
        """(public, private) records of ``image_id`` on this server."""
        per_shard = await self.count_by_image_visibility_per_shard(image_id)
        return sum(p for p, _ in per_shard.values()), sum(q for _, q in per_shard.values())

    async def count_by_image_visibility_per_shard(
        self, image_id: ImageId
    ) -> dict[int, tuple[int, int]]:
        """(public, private) records of ``image_id`` per virtual shard, for the
        edge's check of a private image (``server.privacy``); per shard like
        ``count_by_image_per_shard``."""
        image_id = parse_image_id(image_id)

        async def count(tx: Tx) -> dict[int, tuple[int, int]]:
            rows = await tx.fetchall(
                f"SELECT id >> {LOCAL_BITS},"
                " SUM(CASE WHEN is_private THEN 0 ELSE 1 END),"
                " SUM(CASE WHEN is_private THEN 1 ELSE 0 END)"
                f" FROM records WHERE image_id = %s GROUP BY id >> {LOCAL_BITS}",
                [image_id],
            )
            return {int(row[0]): (int(row[1]), int(row[2])) for row in rows}

        return await self._transaction(None, count, write=False)

    async def ensure_control_tables(self) -> None:
        """Make the move bookkeeping tables (``schema.CONTROL_TABLES``) if missing."""

        async def make(tx: Tx) -> None:
            for name, statement in zip(
                CONTROL_TABLE_NAMES, CONTROL_TABLES[self.dialect], strict=True
            ):
                if not await _table_exists(tx, self.dialect, name):
                    await tx.execute(statement)

        await self._transaction(None, make, write=True)

    async def prepare_fences(self, first: int, last: int) -> None:
        """Unfenced fence rows for shards ``first..last`` (before a move copies):
        from here every mirrored write of them checks its row."""

        async def put(tx: Tx) -> None:
            await tx.execute(
                "DELETE FROM shard_fences WHERE shard >= %s AND shard <= %s", [first, last]
            )
            shards = list(range(first, last + 1))
            for start in range(0, len(shards), 500):
                chunk = shards[start : start + 500]
                await tx.execute(
                    "INSERT INTO shard_fences (shard, fenced) VALUES "
                    + ", ".join(["(%s, 0)"] * len(chunk)),
                    chunk,
                )

        await self._transaction(None, put, write=True)

    async def set_fences(self, first: int, last: int, *, fenced: bool) -> None:
        """Fence (or unfence) shards ``first..last`` here. Fencing waits for every
        mirrored write in flight on them (each holds its fence row shared), and
        none starts after it: the source stops being their authority at once."""

        async def put(tx: Tx) -> None:
            await tx.execute(
                "UPDATE shard_fences SET fenced = %s WHERE shard >= %s AND shard <= %s",
                [fenced, first, last],
            )

        await self._transaction(None, put, write=True)

    # Control documents: the live record shard map, cursors, the lease
    # (``pinhole.records.control`` makes them a ``ControlStore``).

    async def control_get(self, name: str) -> tuple[bytes, int] | None:
        """The document's body and time written; ``None`` if none (or no table)."""

        async def read(tx: Tx) -> tuple[bytes, int] | None:
            if not await _table_exists(tx, self.dialect, "control_documents"):
                return None
            rows = await tx.fetchall(
                "SELECT body, updated_us FROM control_documents WHERE name = %s", [name]
            )
            return (str(rows[0][0]).encode(), int(rows[0][1])) if rows else None

        return await self._transaction(None, read, write=False)

    async def control_put(self, name: str, body: bytes, *, if_absent: bool = False) -> bool:
        text = body.decode()  # JSON documents: text, so aiomysql never escapes bytes

        async def put(tx: Tx) -> None:
            if not if_absent:
                await tx.execute("DELETE FROM control_documents WHERE name = %s", [name])
            await tx.execute(
                "INSERT INTO control_documents (name, body, updated_us) VALUES (%s, %s, %s)",
                [name, text, now_us()],
            )

        try:
            await self._transaction(None, put, write=True)
        except DuplicateKey:
            return False
        return True

    async def control_list(self, prefix: str) -> list[tuple[str, int, int]]:
        """(name, size, time written) of every document whose name starts with
        ``prefix``, in name order."""

        async def read(tx: Tx) -> list[tuple[str, int, int]]:
            if not await _table_exists(tx, self.dialect, "control_documents"):
                return []
            rows = await tx.fetchall(
                "SELECT name, body, updated_us FROM control_documents"
                " WHERE name >= %s ORDER BY name",
                [prefix],
            )
            return [
                (str(r[0]), len(str(r[1]).encode()), int(r[2]))
                for r in rows
                if str(r[0]).startswith(prefix)
            ]

        return await self._transaction(None, read, write=False)

    async def control_delete(self, name: str) -> None:
        async def drop(tx: Tx) -> None:
            if await _table_exists(tx, self.dialect, "control_documents"):
                await tx.execute("DELETE FROM control_documents WHERE name = %s", [name])

        await self._transaction(None, drop, write=True)

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


async def _table_exists(tx: Tx, dialect: Dialect, table: str) -> bool:
    query = {
        "sqlite": "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = %s",
        "mariadb": "SELECT COUNT(*) FROM information_schema.tables"
        " WHERE table_schema = DATABASE() AND table_name = %s",
    }[dialect]
    rows = await tx.fetchall(query, [table])
    return bool(rows[0][0])


_VERSION_QUERY: dict[Dialect, str] = {
    "sqlite": "SELECT COUNT(*) FROM sqlite_master"
    " WHERE type = 'table' AND name = 'schema_migrations'",
    "mariadb": "SELECT COUNT(*) FROM information_schema.tables"
    " WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'",
}
