"""``count_by_image_visibility``, the edge's check of a private image
(server.privacy), on every record store adapter: SQLite, one MariaDB server, and
two MariaDB servers under a shard map (each shard counted once, where its reads
go), all real (session fixtures in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pinhole.domain.ids import image_id_for_bytes
from pinhole.ports import RecordStore
from tests.support.records import owner_on, record_store

IMAGE = image_id_for_bytes(b"a shared image")
OTHER = image_id_for_bytes(b"an image of its own")


ALICE, BOB = owner_on(True, "alice"), owner_on(False, "bob")


@pytest.fixture(params=["sqlite", "mariadb", "sharded"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordStore]:
    adapter = await record_store(request.param, request, tmp_path)
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
