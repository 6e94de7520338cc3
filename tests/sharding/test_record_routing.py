"""How a ShardedRecordStore follows a record shard move's phases, on two SQLite
shard servers (the same SQL core as MariaDB; the live moves between real
MariaDB servers are in test_record_migration.py)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.record import owner_shard
from pinhole.errors import RecordNotFound, RecordStoreUnavailable
from pinhole.records.control import SqlControlStore
from pinhole.records.sharded import RecordRoute, ShardedRecordStore, record_route
from pinhole.records.sqlite import SqliteRecordStore
from pinhole.sharding import Move, Phase, ShardMap, ShardRange, save_shard_map, seed_map

HIGH = ShardRange.parse("800-fff")
IMAGE = image_id_for_bytes(b"routing")
OWNER = next(o for o in (f"router-{n}" for n in itertools.count()) if owner_shard(o) in HIGH)


def test_routes_follow_the_phases_of_a_move() -> None:
    shard_map = ShardMap()
    assert record_route(shard_map, 0x900) == RecordRoute("default", "default")
    copying = shard_map.with_move(Move(HIGH, "default", "b", "copying"))
    assert record_route(copying, 0x900) == RecordRoute("default", "default", "b")
    assert record_route(copying, 0x7FF) == RecordRoute("default", "default")
    flipped = copying.with_move(Move(HIGH, "default", "b", "flipped"))
    # Reads move first; the source stays the one authority for writes.
    assert record_route(flipped, 0x900) == RecordRoute("b", "default", "b")
    cleaning = flipped.with_move(Move(HIGH, "default", "b", "cleaning"))
    assert record_route(cleaning, 0x900) == RecordRoute("b", "b")
    assert record_route(cleaning.without_move(HIGH), 0x900) == RecordRoute("b", "b")


@dataclass
class Pair:
    a: SqliteRecordStore
    b: SqliteRecordStore
    paths: tuple[Path, Path]

    def view(self, refresh: float) -> ShardedRecordStore:
        return ShardedRecordStore(
            {"default": SqliteRecordStore(self.paths[0]), "b": SqliteRecordStore(self.paths[1])},
            seed_map({}, ["b"]),
            refresh_seconds=refresh,
        )


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    paths = (tmp_path / "a.db", tmp_path / "b.db")
    a, b = SqliteRecordStore(paths[0]), SqliteRecordStore(paths[1], name="b")
    for server in (a, b):
        await server.ensure_control_tables()
    yield Pair(a, b, paths)
    await a.close()
    await b.close()


async def _phase(pair: Pair, shard_map: ShardMap, phase: Phase) -> ShardMap:
    moved = shard_map.with_move(Move(HIGH, "default", "b", phase))
    await save_shard_map(SqlControlStore(pair.a), moved)
    return moved


async def test_writes_are_mirrored_and_the_fence_hands_the_shard_over(pair: Pair) -> None:
    await pair.a.prepare_fences(HIGH.first, HIGH.last)
    live = await _phase(pair, ShardMap(), "copying")
    fresh = pair.view(refresh=0.0)
    try:
        made = await fresh.create(OWNER, IMAGE, alias="avatar")
        # Written on the source, mirrored to the target, read from the source.
        assert await pair.a.get(made.id) == made
        assert await pair.b.get(made.id) == made
        changed = await fresh.update(made.id, metadata={"v": 2})
        assert await pair.b.get(made.id) == changed

        live = await _phase(pair, live, "flipped")
        stale = pair.view(refresh=3600.0)  # reads the map once, then never again
        assert (await stale.get(made.id)) == changed  # from the target now
        # The hand-over: fence the source, then record cleaning.
        await pair.a.set_fences(HIGH.first, HIGH.last, fenced=True)
        await _phase(pair, live, "cleaning")
        # A process still routing by "flipped" is refused by the fence, rereads
        # the map and writes to the target alone.
        again = await stale.update(made.id, metadata={"v": 3})
        assert await pair.b.get(made.id) == again
        assert (await pair.a.get(made.id)).metadata == {"v": 2}
        assert (await stale.shard_map()).move_for(HIGH) is not None
        second = await fresh.create(OWNER, IMAGE)
        with pytest.raises(RecordNotFound):
            await pair.a.get(second.id)
        assert (await fresh.get_by_alias(OWNER, "avatar")).id == made.id
        # By image, each shard counts once, on the server its reads come from.
        assert await fresh.count_by_image(IMAGE) == 2
        assert {r.id for r in await fresh.list_by_image(IMAGE)} == {made.id, second.id}
        await stale.close()
    finally:
        await fresh.close()


async def test_a_store_that_cannot_read_the_live_map_refuses_to_guess(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    store = ShardedRecordStore(
        {
            "default": SqliteRecordStore(blocker / "a.db"),
            "b": SqliteRecordStore(tmp_path / "b.db", name="b"),
        },
        seed_map({}, ["b"]),
    )
    try:
        with pytest.raises(RecordStoreUnavailable, match="live record shard map"):
            await store.create(OWNER, IMAGE)
    finally:
        await store.close()
