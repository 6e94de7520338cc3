"""One RecordStore contract, run against every adapter, plus the sharded store's
own promises (routing, a shard server down) and `pinhole db upgrade`.

Real servers only: SQLite files under tmp_path, MariaDB from Debian's
mariadb-server (session fixtures in tests/conftest.py), one fresh database per
test so that tests never see each other's records.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pinhole.app.wiring import build_record_servers, build_record_store
from pinhole.domain.ids import ImageId, image_id_for_bytes
from pinhole.domain.record import (
    MAX_METADATA_BYTES,
    Record,
    RecordId,
    RecordIdGenerator,
    format_record_id,
    owner_shard,
    record_shard,
)
from pinhole.errors import (
    AliasNotFound,
    AliasTaken,
    InvalidAlias,
    InvalidCursor,
    InvalidMetadata,
    InvalidOwner,
    RecordNotFound,
    RecordStoreUnavailable,
    TransientError,
)
from pinhole.ports import RecordStore
from pinhole.records.mariadb import MariaDbRecordStore
from pinhole.records.schema import LATEST
from pinhole.records.sharded import ShardedRecordStore
from pinhole.records.sqlite import SqliteRecordStore
from pinhole.settings import RecordShards, Settings
from pinhole.sharding import seed_map
from tests.support.clirun import run_pinhole
from tests.support.mariadb import MariaDbServer
from tests.support.records import SPLIT, mariadb_store, owners_on, record_store

# A bound on "does not hang" for a server that is down or hung (the adapters'
# deadline is 1 s here), not a benchmark.
NO_HANG = 15.0
ALICE, CAROL = owners_on(True, 2, "alice")
BOB, DAVE = owners_on(False, 2, "bob")
IMAGE = image_id_for_bytes(b"an image")
OTHER_IMAGE = image_id_for_bytes(b"another image")


def image(n: int) -> ImageId:
    return image_id_for_bytes(f"image {n}".encode())


@pytest.fixture(params=["sqlite", "mariadb", "sharded"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordStore]:
    """Every adapter; ``sharded`` routes half of the shards to each of two MariaDB
    servers, so the contract holds across a shard map too."""
    adapter = await record_store(request.param, request, tmp_path)
    yield adapter
    await adapter.close()


async def walk(store: RecordStore, owner: str, limit: int) -> list[Record]:
    seen: list[Record] = []
    cursor = None
    while True:
        page = await store.list_by_owner(owner, limit=limit, cursor=cursor)
        seen += page.records
        if page.cursor is None:
            return seen
        cursor = page.cursor


# --- Contract: every adapter. ------------------------------------------------


def test_implements_the_port(store: RecordStore) -> None:
    assert isinstance(store, RecordStore)


async def test_ping(store: RecordStore) -> None:
    await store.ping()


async def test_create_get_roundtrip(store: RecordStore) -> None:
    before = time.time()
    meta = {"caption": "Ünïcode ✓", "tags": ["a", "b"], "n": 3, "nested": {"x": None}}
    made = await store.create(ALICE, IMAGE, metadata=meta, alias="avatar", private=True)
    assert made.owner == ALICE
    assert made.image_id == IMAGE
    assert made.metadata == meta
    assert made.alias == "avatar"
    assert made.private is True
    assert made.created_us == made.updated_us
    assert before - 5 < made.created_us / 1e6 < time.time() + 5

    got = await store.get(made.id)
    assert got == made
    plain = await store.create(ALICE, IMAGE)
    assert (plain.metadata, plain.alias, plain.private) == ({}, None, False)
    assert plain.id != made.id
    # In JSON the id is a string; everything else is as stored.
    body = got.to_json()
    assert body["id"] == format_record_id(made.id) == str(made.id)
    assert body["metadata"] == meta


async def test_same_image_two_owners_two_records(store: RecordStore) -> None:
    a = await store.create(ALICE, IMAGE)
    b = await store.create(BOB, IMAGE)
    assert a.id != b.id
    assert (await store.get(a.id)).owner == ALICE
    assert (await store.get(b.id)).owner == BOB


async def test_ids_carry_the_owners_shard(store: RecordStore) -> None:
    for owner in (ALICE, BOB, CAROL, DAVE):
        record = await store.create(owner, IMAGE)
        assert record_shard(record.id) == owner_shard(owner) == record.shard


async def test_metadata_limit(store: RecordStore) -> None:
    room = MAX_METADATA_BYTES - len('{"k":""}')
    fits = await store.create(ALICE, IMAGE, metadata={"k": "x" * room})
    assert (await store.get(fits.id)).metadata == {"k": "x" * room}
    with pytest.raises(InvalidMetadata):
        await store.create(ALICE, IMAGE, metadata={"k": "x" * (room + 1)})
    with pytest.raises(InvalidMetadata):
        await store.update(fits.id, metadata={"k": "é" * room})
    with pytest.raises(InvalidMetadata):
        await store.create(ALICE, IMAGE, metadata=["not", "an", "object"])  # type: ignore[arg-type]
    # Nothing half-made: only the record that fitted exists, unchanged.
    assert [r.id for r in (await store.list_by_owner(ALICE)).records] == [fits.id]
    assert (await store.get(fits.id)).metadata == {"k": "x" * room}


async def test_update_metadata_and_private(store: RecordStore) -> None:
    made = await store.create(ALICE, IMAGE, metadata={"v": 1})
    changed = await store.update(made.id, metadata={"v": 2, "more": True})
    assert changed.metadata == {"v": 2, "more": True}
    assert changed.private is False
    assert changed.updated_us >= made.updated_us
    hidden = await store.update(made.id, private=True)
    assert (hidden.metadata, hidden.private) == ({"v": 2, "more": True}, True)
    assert await store.get(made.id) == hidden
    with pytest.raises(RecordNotFound):
        await store.update(RecordIdGenerator().new(owner_shard(ALICE)), metadata={})


async def test_validation_comes_before_any_io(store: RecordStore) -> None:
    with pytest.raises(InvalidOwner):
        await store.create("../etc", IMAGE)
    with pytest.raises(InvalidOwner):
        await store.list_by_owner("a b")
    with pytest.raises(InvalidAlias):
        await store.create(ALICE, IMAGE, alias="has/slash")
    with pytest.raises(InvalidAlias):
        await store.get_by_alias(ALICE, "")
    with pytest.raises(InvalidCursor):
        await store.list_by_owner(ALICE, cursor="not-a-cursor")


async def test_alias_unique_per_owner(store: RecordStore) -> None:
    first = await store.create(ALICE, IMAGE, alias="avatar")
    # The same alias for another owner (on either shard) is fine.
    bobs = await store.create(BOB, IMAGE, alias="avatar")
    carols = await store.create(CAROL, OTHER_IMAGE, alias="avatar")
    assert (await store.get_by_alias(ALICE, "avatar")).id == first.id
    assert (await store.get_by_alias(BOB, "avatar")).id == bobs.id
    assert (await store.get_by_alias(CAROL, "avatar")).id == carols.id

    with pytest.raises(AliasTaken):
        await store.create(ALICE, OTHER_IMAGE, alias="avatar")
    second = await store.create(ALICE, OTHER_IMAGE)
    with pytest.raises(AliasTaken):
        await store.set_alias(second.id, "avatar")
    assert (await store.get(second.id)).alias is None
    # Aliases are case-sensitive, like the URLs they go in.
    assert (await store.set_alias(second.id, "Avatar")).alias == "Avatar"
    # Setting an alias a record holds already is a no-op.
    assert (await store.set_alias(first.id, "avatar")).alias == "avatar"


async def test_alias_move_and_clear(store: RecordStore) -> None:
    old = await store.create(ALICE, IMAGE, alias="avatar")
    new = await store.create(ALICE, OTHER_IMAGE)
    moved = await store.set_alias(new.id, "avatar", move=True)
    assert moved.alias == "avatar"
    assert (await store.get(old.id)).alias is None
    assert (await store.get_by_alias(ALICE, "avatar")).id == new.id

    cleared = await store.clear_alias(new.id)
    assert cleared.alias is None
    assert (await store.clear_alias(new.id)).alias is None
    with pytest.raises(AliasNotFound):
        await store.get_by_alias(ALICE, "avatar")
    # AliasNotFound is a RecordNotFound: one except clause serves both lookups.
    with pytest.raises(RecordNotFound):
        await store.get_by_alias(ALICE, "avatar")
    # A freed alias can be taken again, and a deleted record frees its alias.
    await store.set_alias(old.id, "avatar")
    await store.delete(old.id)
    assert (await store.set_alias(new.id, "avatar")).alias == "avatar"


async def test_concurrent_alias_claims_have_one_winner(store: RecordStore) -> None:
    records = [await store.create(ALICE, image(n)) for n in range(12)]
    results = await asyncio.gather(
        *(store.set_alias(r.id, "cover") for r in records), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, Record)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1, results
    assert all(isinstance(exc, AliasTaken) for exc in losers), losers
    assert (await store.get_by_alias(ALICE, "cover")).id == winners[0].id

    created = await asyncio.gather(
        *(store.create(BOB, image(n), alias="banner") for n in range(12)), return_exceptions=True
    )
    made = [r for r in created if isinstance(r, Record)]
    assert len(made) == 1, created
    assert all(isinstance(r, AliasTaken) for r in created if not isinstance(r, Record))
    assert len((await store.list_by_owner(BOB)).records) == 1


async def test_concurrent_moves_leave_one_holder(store: RecordStore) -> None:
    records = [await store.create(ALICE, image(n)) for n in range(8)]
    results = await asyncio.gather(
        *(store.set_alias(r.id, "hero", move=True) for r in records), return_exceptions=True
    )
    assert all(isinstance(r, Record) for r in results), results
    holders = [r for r in (await store.list_by_owner(ALICE)).records if r.alias == "hero"]
    assert len(holders) == 1
    assert (await store.get_by_alias(ALICE, "hero")).id == holders[0].id


async def test_listing_is_newest_first_in_pages(store: RecordStore) -> None:
    made = [await store.create(ALICE, image(n), metadata={"n": n}) for n in range(25)]
    await store.create(CAROL, IMAGE)  # another owner's records never show
    first = await store.list_by_owner(ALICE, limit=10)
    assert [r.metadata["n"] for r in first.records] == list(range(24, 14, -1))
    assert first.cursor is not None
    everything = await walk(store, ALICE, 10)
    assert [r.id for r in everything] == [r.id for r in reversed(made)]
    # A page that ends exactly at the end says so: no empty last page.
    exact = await store.list_by_owner(ALICE, limit=25)
    assert len(exact.records) == 25
    assert exact.cursor is None
    empty = await store.list_by_owner(DAVE)
    assert (empty.records, empty.cursor) == ([], None)
    with pytest.raises(ValueError, match="limit"):
        await store.list_by_owner(ALICE, limit=0)


async def test_pagination_under_concurrent_inserts_and_deletes(store: RecordStore) -> None:
    """A walk sees every record that exists throughout it exactly once, in order,
    while other tasks insert new records and delete others."""
    existing = [await store.create(ALICE, image(n)) for n in range(60)]
    doomed = {r.id for r in existing[1::3]}
    kept = [r for r in existing if r.id not in doomed]
    stop = asyncio.Event()

    async def insert() -> None:
        n = 1000
        while not stop.is_set():
            await store.create(ALICE, image(n))
            n += 1
            await asyncio.sleep(0)

    async def delete() -> None:
        for record_id in doomed:
            await store.delete(record_id)
            await asyncio.sleep(0)

    writers = [asyncio.create_task(insert()), asyncio.create_task(delete())]
    seen: list[Record] = []
    cursor = None
    try:
        while True:
            page = await store.list_by_owner(ALICE, limit=4, cursor=cursor)
            seen += page.records
            if page.cursor is None:
                break
            cursor = page.cursor
            await asyncio.sleep(0.001)
    finally:
        stop.set()
        await asyncio.gather(*writers)

    ids = [r.id for r in seen]
    assert len(ids) == len(set(ids)), "a record was listed twice"
    keys = [(r.created_us, r.id) for r in seen]
    assert keys == sorted(keys, reverse=True), "not newest first"
    assert {r.id for r in kept} <= set(ids), "a record that existed throughout was skipped"


async def test_delete(store: RecordStore) -> None:
    made = await store.create(ALICE, IMAGE, alias="gone")
    removed = await store.delete(made.id)
    assert removed == made
    with pytest.raises(RecordNotFound):
        await store.get(made.id)
    # Deleting a missing record is not an error: there is nothing to return.
    assert await store.delete(made.id) is None
    assert await store.delete(RecordIdGenerator().new(owner_shard(BOB))) is None
    with pytest.raises(RecordNotFound):
        await store.set_alias(made.id, "again")
    with pytest.raises(RecordNotFound):
        await store.clear_alias(made.id)


async def test_delete_owner_in_batches(store: RecordStore) -> None:
    mine = [await store.create(ALICE, image(n % 4)) for n in range(11)]
    others = await store.create(CAROL, IMAGE)
    first = await store.delete_owner(ALICE, batch=4)
    assert (first.removed, first.more) == (4, True)
    # Oldest first: a resumed delete continues where the last one stopped.
    assert {r.image_id for r in mine[:4]} == first.image_ids
    left = await walk(store, ALICE, 100)
    assert [r.id for r in left] == [r.id for r in reversed(mine[4:])]

    second = await store.delete_owner(ALICE, batch=4)
    third = await store.delete_owner(ALICE, batch=4)
    assert (second.removed, second.more, third.removed, third.more) == (4, True, 3, False)
    assert (await store.list_by_owner(ALICE)).records == []
    again = await store.delete_owner(ALICE, batch=4)
    assert (again.removed, again.more, again.image_ids) == (0, False, frozenset())
    assert await store.get(others.id) == others


async def test_records_by_image_and_count(store: RecordStore) -> None:
    # Owners on both halves of the shard space (both servers when sharded).
    made = [await store.create(owner, IMAGE) for owner in (ALICE, BOB, CAROL, DAVE)]
    made.append(await store.create(BOB, IMAGE))
    await store.create(ALICE, OTHER_IMAGE)
    assert await store.count_by_image(IMAGE) == 5
    assert await store.count_by_image(OTHER_IMAGE) == 1
    assert await store.count_by_image(image(999)) == 0
    listed = await store.list_by_image(IMAGE)
    assert sorted(r.id for r in listed) == sorted(r.id for r in made)
    keys = [(r.created_us, r.id) for r in listed]
    assert keys == sorted(keys), "oldest first"
    assert [r.id for r in await store.list_by_image(IMAGE, limit=2)] == [r.id for r in listed[:2]]

    # "The last record of an image": the count goes to zero as records go.
    for record in made:
        await store.delete(record.id)
    assert await store.count_by_image(IMAGE) == 0
    assert await store.list_by_image(IMAGE) == []


async def test_missing_records(store: RecordStore) -> None:
    missing = RecordIdGenerator().new(owner_shard(DAVE))
    with pytest.raises(RecordNotFound) as info:
        await store.get(missing)
    assert info.value.status == 404
    assert info.value.code == "record-not-found"


class _RepeatsFirst(RecordIdGenerator):
    """Hands out ``taken`` once, as another process in the same millisecond
    might, then fresh ids."""

    def __init__(self, taken: RecordId) -> None:
        super().__init__()
        self.taken: RecordId | None = taken

    def new(self, shard: int, *, now_ms: int | None = None) -> RecordId:
        taken, self.taken = self.taken, None
        return taken if taken is not None else super().new(shard, now_ms=now_ms)


@pytest.mark.parametrize("kind", ["sqlite", "mariadb"])
async def test_an_id_made_twice_is_retried_with_a_fresh_one(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store: SqliteRecordStore | MariaDbRecordStore
    if kind == "sqlite":
        store = SqliteRecordStore(tmp_path / "records.db")
    else:
        store = await mariadb_store(request.getfixturevalue("mariadb"))
    try:
        first = await store.create(ALICE, IMAGE, alias="mine")
        store.ids = _RepeatsFirst(first.id)
        second = await store.create(ALICE, OTHER_IMAGE, alias="other")
        assert second.id != first.id
        assert record_shard(second.id) == owner_shard(ALICE)
        assert await store.get(first.id) == first
        assert await store.get(second.id) == second
    finally:
        await store.close()


# --- SQLite: the embedded store. ------------------------------------------------


async def test_sqlite_keeps_records_across_reopen_and_makes_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "records.db"
    store = SqliteRecordStore.from_url(f"sqlite:///{path}")
    made = await store.create(ALICE, IMAGE, alias="a")
    assert await store.schema_version() == LATEST
    await store.close()
    again = SqliteRecordStore.from_url(f"sqlite:///{path}")
    assert await again.get(made.id) == made
    assert (await again.upgrade_schema()).applied == 0
    await again.ping()
    await again.close()


async def test_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    store = SqliteRecordStore(tmp_path / "blocker" / "records.db", name="embedded")
    with pytest.raises(RecordStoreUnavailable) as info:
        await store.get(RecordIdGenerator().new(7))
    assert (info.value.shard, info.value.server) == (7, "embedded")
    assert info.value.status == 503
    assert info.value.retry_after
    assert isinstance(info.value, TransientError)
    await store.close()


# --- Sharded: routing, and one server down. --------------------------------------


async def test_sharded_puts_each_owner_on_its_shards_server(
    mariadb: MariaDbServer, mariadb_b: MariaDbServer
) -> None:
    a = await mariadb_store(mariadb)
    b = await mariadb_store(mariadb_b, "b")
    store = ShardedRecordStore({"default": a, "b": b}, seed_map(SPLIT, ["b"]))
    try:
        alices = await store.create(ALICE, IMAGE, alias="x")
        bobs = await store.create(BOB, IMAGE, alias="x")
        # Each record is on its shard's server only: found there, not on the other.
        assert await a.get(alices.id) == alices
        assert await b.get(bobs.id) == bobs
        assert await b.delete(alices.id) is None
        assert await a.delete(bobs.id) is None
        assert store.server_for_shard(record_shard(alices.id)) == "default"
        assert store.server_for_shard(record_shard(bobs.id)) == "b"
        # Any process routes by the id alone: a fresh store over the same servers.
        other = ShardedRecordStore(
            {"default": await _same(mariadb, a), "b": await _same(mariadb_b, b, "b")},
            seed_map(SPLIT, ["b"]),
        )
        assert await other.get(bobs.id) == bobs
        assert (await other.get_by_alias(ALICE, "x")).id == alices.id
        await other.close()
    finally:
        await store.close()


async def _same(
    server: MariaDbServer, store: MariaDbRecordStore, name: str = "default"
) -> MariaDbRecordStore:
    return MariaDbRecordStore.from_url(server.url(store.database), name=name)


async def _pair(
    mariadb_factory: Callable[[], MariaDbServer],
) -> tuple[MariaDbServer, ShardedRecordStore]:
    """A sharded store over two fresh servers; the one for shards 800-fff can be taken down."""
    up, doomed = mariadb_factory(), mariadb_factory()
    store = ShardedRecordStore(
        {"default": await mariadb_store(up), "b": await mariadb_store(doomed, "b")},
        seed_map(SPLIT, ["b"]),
    )
    return doomed, store


@pytest.mark.parametrize("how", ["killed", "hung"])
async def test_a_shard_server_down_fails_only_its_shards(
    mariadb_factory: Callable[[], MariaDbServer], how: str
) -> None:
    doomed, store = await _pair(mariadb_factory)
    try:
        alices = await store.create(ALICE, IMAGE)
        bobs = await store.create(BOB, IMAGE)
        await store.list_by_owner(BOB)  # a pooled connection to the doomed server
        if how == "killed":
            doomed.kill()
        else:
            doomed.pause()

        for call in (
            lambda: store.get(bobs.id),
            lambda: store.list_by_owner(BOB),
            lambda: store.create(DAVE, IMAGE),
            lambda: store.delete_owner(BOB),
        ):
            started = time.monotonic()
            with pytest.raises(RecordStoreUnavailable) as info:
                await asyncio.wait_for(call(), NO_HANG)
            assert time.monotonic() - started < NO_HANG
            assert info.value.server == "b"
            assert info.value.shard is not None
            assert info.value.shard >= 0x800
            assert info.value.status == 503
        with pytest.raises(RecordStoreUnavailable, match="'b'"):
            await asyncio.wait_for(store.count_by_image(IMAGE), NO_HANG)
        with pytest.raises(RecordStoreUnavailable, match="'b'"):
            await asyncio.wait_for(store.ping(), NO_HANG)

        # The other server's shards keep working meanwhile.
        assert await store.get(alices.id) == alices
        carols = await store.create(CAROL, IMAGE, alias="still-up")
        assert (await store.get_by_alias(CAROL, "still-up")).id == carols.id
        assert len((await store.list_by_owner(ALICE)).records) == 1

        if how == "killed":
            doomed.start()
        else:
            doomed.resume()
        # Back: the same store heals without a restart.
        assert await store.get(bobs.id) == bobs
        assert await store.count_by_image(IMAGE) == 3
        await store.ping()
    finally:
        doomed.resume()
        await store.close()


# --- Settings and wiring. ----------------------------------------------------------


async def test_settings_build_a_sharded_store_over_named_servers(
    mariadb_b: MariaDbServer, tmp_path: Path
) -> None:
    """The embedded default as "default" and a MariaDB server as "b": any URL per server."""
    url_b = mariadb_b.url(mariadb_b.create_database())
    settings = Settings(
        records=f"sqlite:///{tmp_path / 'records.db'}",
        record_shards=RecordShards(servers={"b": url_b}, map=SPLIT, timeout_seconds=1.0),
    )
    servers = build_record_servers(settings.records, settings.record_shards)
    assert sorted(servers) == ["b", "default"]
    for server in servers.values():
        await server.upgrade_schema()
        await server.close()
    store = build_record_store(settings.records, settings.record_shards)
    try:
        assert isinstance(store, ShardedRecordStore)
        alices = await store.create(ALICE, IMAGE)
        bobs = await store.create(BOB, IMAGE)
        assert isinstance(store.servers["default"], SqliteRecordStore)
        assert isinstance(store.servers["b"], MariaDbRecordStore)
        assert await store.servers["default"].get(alices.id) == alices
        assert await store.servers["b"].get(bobs.id) == bobs
        await store.ping()
    finally:
        await store.close()


async def test_the_default_is_one_embedded_file() -> None:
    settings = Settings()
    assert settings.records == "sqlite:///./var/pinhole/records.db"
    store = build_record_store(settings.records, settings.record_shards)
    assert isinstance(store, SqliteRecordStore)
    assert store.path == Path("var/pinhole/records.db")
    await store.close()  # never opened: no file made
    assert SqliteRecordStore.from_url("sqlite:////srv/r.db").path == Path("/srv/r.db")


@pytest.mark.parametrize(
    ("shards", "why"),
    [
        ({"servers": {"default": "mysql://h/db"}}, "PINHOLE_RECORDS"),
        ({"servers": {"b": "mysql://h/db"}, "map": {"800-fff": "c"}}, "not defined"),
        ({"servers": {"b": "mysql://h/db"}, "map": {"000-8ff": "b", "800-fff": "b"}}, "overlap"),
        ({"map": {"80-fff": "default"}}, "three lowercase hex"),
    ],
)
def test_bad_shard_settings_are_refused(shards: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        RecordShards.model_validate(shards)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgres://h/db", "record store URL scheme"),
        ("mysql://h", "mysql://user:password@host:port/database"),
        ("mysql://h/db?ssl=1", "takes no options"),
        ("sqlite://relative.db", "sqlite:///relative"),
        ("sqlite:///", "names no file"),
    ],
)
def test_bad_record_store_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        build_record_store(url, RecordShards())


def test_a_mariadb_url_names_user_password_host_port_and_database() -> None:
    store = MariaDbRecordStore.from_url("mariadb://u%40x:p%3Aw@db.example:3307/pin_hole")
    assert (store.host, store.port, store.database) == ("db.example", 3307, "pin_hole")
    assert "p:w" not in repr(store)  # no password in logs


# --- `pinhole db upgrade`, for real in a subprocess. ------------------------------


def _db_env(urls: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINHOLE_")}
    env["PINHOLE_RECORDS"] = urls["default"]
    others = {k: v for k, v in urls.items() if k != "default"}
    if others:
        env["PINHOLE_RECORD_SHARDS__SERVERS"] = json.dumps(others)
        env["PINHOLE_RECORD_SHARDS__MAP"] = json.dumps(SPLIT)
    env["PINHOLE_RECORD_SHARDS__CONNECT_TIMEOUT_SECONDS"] = "1"
    env["PINHOLE_RECORD_SHARDS__TIMEOUT_SECONDS"] = "2"
    env["PINHOLE_STORAGE"] = f"file://{tmp_path / 'blobs'}"
    return env


async def test_db_upgrade_is_idempotent_and_resumes_a_shard_that_was_down(
    mariadb_factory: Callable[[], MariaDbServer], tmp_path: Path
) -> None:
    a, b = mariadb_factory(), mariadb_factory()
    urls = {"default": a.url(a.create_database()), "b": b.url(b.create_database())}
    env = _db_env(urls, tmp_path)
    b.stop()

    down = await run_pinhole(["db", "upgrade"], env, within_seconds=120)
    assert down.returncode != 0, down
    assert f"default: upgraded from 0 to {LATEST}" in down.stdout, down
    assert "b: FAILED" in down.stdout, down
    assert "1 of 2 shard servers failed" in down.stdout + down.stderr, down

    b.start()
    store = MariaDbRecordStore.from_url(urls["b"], name="b")
    with pytest.raises(RecordStoreUnavailable, match="db upgrade"):
        await store.ping()
    again = await run_pinhole(["db", "upgrade"], env, within_seconds=120)
    assert again.returncode == 0, again
    assert f"default: at {LATEST}, nothing to do" in again.stdout, again
    assert f"b: upgraded from 0 to {LATEST}" in again.stdout, again
    await store.ping()
    await store.close()

    third = await run_pinhole(["db", "upgrade"], env, within_seconds=120)
    assert third.returncode == 0, third
    assert third.stdout.count("nothing to do") == 2, third


async def test_db_upgrade_on_the_embedded_default(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'var' / 'records.db'}"
    done = await run_pinhole(["db", "upgrade"], _db_env({"default": url}, tmp_path))
    assert done.returncode == 0, done
    assert f"default: upgraded from 0 to {LATEST}" in done.stdout, done
    store = SqliteRecordStore.from_url(url)
    await store.ping()
    made = await store.create(ALICE, IMAGE)
    assert await store.get(RecordId(made.id)) == made
    await store.close()
