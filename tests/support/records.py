"""Record stores for the suites that test the record API and its adapters:
owners placed on a chosen shard server, and each kind of store, made real
(SQLite on disk, MariaDB from tests/support/mariadb.py, or both MariaDB
servers behind one shard map)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pinhole.domain.record import owner_shard
from pinhole.ports import RecordStore
from pinhole.records.mariadb import MariaDbRecordStore
from pinhole.records.sharded import ShardedRecordStore
from pinhole.records.sqlite import SqliteRecordStore
from pinhole.sharding import seed_map
from tests.support.mariadb import MariaDbServer

# The sharded store's map: shards from 0x800 on server "b", the rest on "default".
SPLIT = {"800-fff": "b"}


def owners_on(low: bool, count: int, prefix: str = "owner") -> list[str]:
    """Owner names whose shard is below 0x800 (``low``: server "default" in the
    sharded store) or from 0x800 (server "b")."""
    names = (f"{prefix}-{n}" for n in itertools.count())
    return list(itertools.islice((n for n in names if (owner_shard(n) < 0x800) == low), count))


def owner_on(low: bool, prefix: str) -> str:
    return owners_on(low, 1, prefix)[0]


async def mariadb_store(
    server: MariaDbServer, name: str = "default", *, timeout_seconds: float = 1.0
) -> MariaDbRecordStore:
    """A fresh database on ``server``, at the latest schema."""
    store = MariaDbRecordStore.from_url(
        server.url(server.create_database()),
        name=name,
        connect_timeout_seconds=timeout_seconds,
        timeout_seconds=timeout_seconds,
    )
    await store.upgrade_schema()
    return store


async def record_store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, *, timeout_seconds: float = 1.0
) -> RecordStore:
    """``sqlite``, ``mariadb`` or ``sharded`` (two MariaDB servers, ``SPLIT``);
    the MariaDB servers are the ``mariadb`` and ``mariadb_b`` fixtures."""
    if kind == "sqlite":
        return SqliteRecordStore(tmp_path / "records.db", timeout_seconds=5.0)
    a = await mariadb_store(request.getfixturevalue("mariadb"), timeout_seconds=timeout_seconds)
    if kind == "mariadb":
        return a
    assert kind == "sharded", kind
    b = await mariadb_store(
        request.getfixturevalue("mariadb_b"), "b", timeout_seconds=timeout_seconds
    )
    return ShardedRecordStore({"default": a, "b": b}, seed_map(SPLIT, ["b"]))
