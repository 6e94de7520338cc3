"""``count_by_image_visibility``, the edge's check of a private image
(server.privacy), on every record store adapter: SQLite, one MariaDB server, and
two MariaDB servers under a shard map (each shard counted once, where its reads
go), all real (session fixtures in tests/conftest.py)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.record import owner_shard
from pinhole.ports import RecordStore
from pinhole.records.mariadb import MariaDbRecordStore
from pinhole.records.sharded import ShardedRecordStore
from pinhole.records.sqlite import SqliteRecordStore
from pinhole.sharding import seed_map
from tests.support.mariadb import MariaDbServer

IMAGE = image_id_for_bytes(b"a shared image")
OTHER = image_id_for_bytes(b"an image of its own")


def owner_on(low: bool, prefix: str) -> str:
    """An owner below shard 0x800 (server "default" when sharded) or from it ("b")."""
    return next(
        f"{prefix}-{n}" for n in itertools.count() if (owner_shard(f"{prefix}-{n}") < 0x800) == low
    )


ALICE, BOB = owner_on(True, "alice"), owner_on(False, "bob")


async def _mariadb(server: MariaDbServer, name: str = "default") -> MariaDbRecordStore:
    store = MariaDbRecordStore.from_url(
        server.url(server.create_database()),
        name=name,
        connect_timeout_seconds=1.0,
        timeout_seconds=1.0,
    )
    await store.upgrade_schema()
    return store


@pytest.fixture(params=["sqlite", "mariadb", "sharded"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordStore]:
    adapter: RecordStore
    if request.param == "sqlite":
        adapter = SqliteRecordStore(tmp_path / "records.db", timeout_seconds=5.0)
    elif request.param == "mariadb":
        adapter = await _mariadb(request.getfixturevalue("mariadb"))
    else:
        a = await _mariadb(request.getfixturevalue("mariadb"))
        b = await _mariadb(request.getfixturevalue("mariadb_b"), "b")
        adapter = ShardedRecordStore({"default": a, "b": b}, seed_map({"800-fff": "b"}, ["b"]))
    yield adapter
    await adapter.close()


async def test_public_and_private_records_of_an_image_are_counted_across_owners(
    store: RecordStore,
) -> None:
    assert await store.count_by_image_visibility(IMAGE) == (0, 0)
    alice = await store.create(ALICE, IMAGE, private=True)
    await store.create(ALICE, OTHER)
    assert await store.count_by_image_visibility(IMAGE) == (0, 1)
    bob = await store.create(BOB, IMAGE)
    await store.create(BOB, IMAGE, private=True)
    assert await store.count_by_image_visibility(IMAGE) == (1, 2)
    # The flag changed by update, and a record deleted: counted as they are now.
    await store.update(bob.id, private=True)
    assert await store.count_by_image_visibility(IMAGE) == (0, 3)
    await store.update(alice.id, private=False)
    assert await store.count_by_image_visibility(IMAGE) == (1, 2)
    await store.delete(alice.id)
    assert await store.count_by_image_visibility(IMAGE) == (0, 2)
    assert await store.count_by_image_visibility(OTHER) == (1, 0)
