"""``pinhole db migrate``: record shards move between two real MariaDB servers
while other "processes" create, update, alias and delete records on them;
a migration killed with SIGKILL mid-copy resumes; a dry run changes nothing;
a second migration while one runs is refused. The CLI runs as a real process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pinhole.app.db_migrate import cursor_key
from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.keys import SHARD_MAP_KEY
from pinhole.domain.record import Record, RecordIdGenerator, now_us, owner_shard
from pinhole.errors import AliasNotFound, RecordNotFound
from pinhole.records.control import SqlControlStore
from pinhole.records.mariadb import MariaDbRecordStore
from pinhole.records.sharded import ShardedRecordStore
from pinhole.records.sql import COLUMNS, record_from_row
from pinhole.sharding import Move, ShardMap, ShardRange, seed_map
from tests.support.clirun import run_pinhole, spawn
from tests.support.mariadb import MariaDbServer

pytestmark = pytest.mark.slow

HIGH = ShardRange.parse("800-fff")
MIGRATE = ["db", "migrate", "--shards", "800-fff", "--to", "b"]
IMAGE = image_id_for_bytes(b"a record migration image")


def owners(prefix: str, count: int, *, high: bool) -> list[str]:
    """``count`` owner names whose shards are in 800-fff (``high``) or below it."""
    names = (f"{prefix}-{n}" for n in itertools.count())
    return list(itertools.islice((o for o in names if (owner_shard(o) in HIGH) == high), count))


@dataclass
class Servers:
    a: MariaDbServer
    b: MariaDbServer
    url_a: str
    url_b: str

    def server(self, url: str, name: str) -> MariaDbRecordStore:
        return MariaDbRecordStore.from_url(url, name=name, timeout_seconds=10.0)

    def default(self) -> MariaDbRecordStore:
        return self.server(self.url_a, "default")

    def process(self, refresh: float = 0.05) -> ShardedRecordStore:
        """One more process's view: its own connections and its own map age."""
        return ShardedRecordStore(
            {"default": self.default(), "b": self.server(self.url_b, "b")},
            seed_map({}, ["b"]),
            refresh_seconds=refresh,
        )

    def env(self, *, grace: float = 0.0) -> dict[str, str]:
        return {
            **os.environ,
            "PINHOLE_RECORDS": self.url_a,
            "PINHOLE_RECORD_SHARDS__SERVERS": json.dumps({"b": self.url_b}),
            "PINHOLE_RECORD_SHARDS__REFRESH_SECONDS": "0.1",
            "PINHOLE_RECORD_SHARDS__GRACE_SECONDS": str(grace),
            "PINHOLE_RECORD_SHARDS__TIMEOUT_SECONDS": "10",
        }


@pytest.fixture
async def servers(mariadb: MariaDbServer, mariadb_b: MariaDbServer) -> Servers:
    pair = Servers(
        mariadb,
        mariadb_b,
        mariadb.url(mariadb.create_database()),
        mariadb_b.url(mariadb_b.create_database()),
    )
    for url, name in ((pair.url_a, "default"), (pair.url_b, "b")):
        store = pair.server(url, name)
        await store.upgrade_schema()
        await store.close()
    return pair


def rows(server: MariaDbServer, url: str) -> dict[int, Record]:
    """Every record on one server, read directly (tab-separated, as root)."""
    database = url.rsplit("/", 1)[1]
    found: dict[int, Record] = {}
    for line in server.sql(f"SELECT {COLUMNS} FROM {database}.records").splitlines():
        values: list[object] = list(line.split("\t"))
        values[4] = None if values[4] == "NULL" else values[4]
        values[5] = values[5] == "1"
        record = record_from_row(values)
        found[record.id] = record
    return found


async def seed(url: str, who: list[str], per_owner: int) -> dict[int, Record]:
    """``per_owner`` records for each owner, written in bulk straight to one server."""
    store = MariaDbRecordStore.from_url(url, name="default")
    ids = RecordIdGenerator()
    made: dict[int, Record] = {}
    try:
        for owner in who:
            shard = owner_shard(owner)
            batch = []
            for n in range(per_owner):
                rid, created = ids.new(shard), now_us()
                alias = "first" if n == 0 else None
                batch.append(
                    (rid, owner, IMAGE, json.dumps({"n": n}), alias, False, created, created)
                )
            await store.replace_rows(shard, [row[0] for row in batch], batch)
            for row in batch:
                made[row[0]] = record_from_row(row)
    finally:
        await store.close()
    return made


async def live_map(servers: Servers) -> ShardMap:
    store = servers.default()
    try:
        return ShardMap.from_json((await SqlControlStore(store).get(SHARD_MAP_KEY)).body)
    finally:
        await store.close()


def in_high(record_id: int) -> bool:
    return (record_id >> 51) in HIGH


async def test_a_live_move_under_load_loses_nothing_and_leaves_nothing_behind(
    servers: Servers, tmp_path: Path
) -> None:
    high_owners = owners("mover", 40, high=True)
    low_owners = owners("stayer", 4, high=False)
    expected = await seed(servers.url_a, high_owners + low_owners, 25)

    writer, reader = servers.process(), servers.process()
    done = asyncio.Event()
    versions: set[int] = set()
    operations = {"create": 0, "update": 0, "delete": 0, "alias": 0}

    async def load() -> None:
        # Another process writes throughout, and a third must see each write at once.
        rng = random.Random(17)
        n = 0
        while not done.is_set():
            n += 1
            owner = rng.choice(high_owners + low_owners[:1])
            mine = [r for r in expected.values() if r.owner == owner]
            roll = rng.random()
            if roll < 0.35 or not mine:
                made = await writer.create(owner, IMAGE, metadata={"made": n})
                expected[made.id] = made
                operations["create"] += 1
                assert await reader.get(made.id) == made
            elif roll < 0.6:
                victim = rng.choice(mine)
                changed = await writer.update(victim.id, metadata={"changed": n})
                expected[victim.id] = changed
                operations["update"] += 1
                assert await reader.get(victim.id) == changed
            elif roll < 0.8:
                victim = rng.choice(mine)
                assert await writer.delete(victim.id) == expected.pop(victim.id)
                operations["delete"] += 1
                with pytest.raises(RecordNotFound):
                    await reader.get(victim.id)
            else:
                # The alias moves to another record of the owner: one holder only.
                holder = rng.choice(mine)
                moved = await writer.set_alias(holder.id, "first", move=True)
                for record in mine:
                    if record.alias == "first" and record.id != holder.id:
                        expected[record.id] = await reader.get(record.id)
                        assert expected[record.id].alias is None
                expected[holder.id] = moved
                operations["alias"] += 1
                assert (await reader.get_by_alias(owner, "first")).id == holder.id
            versions.add((await reader.shard_map()).version)
            await asyncio.sleep(0)

    log_path = tmp_path / "migrate.log"
    loader = asyncio.create_task(load())
    try:
        await asyncio.sleep(0.3)  # the load is under way before the move starts
        # Small batches: the copy itself lasts long enough to race the writer.
        proc = await spawn([*MIGRATE, "--batch", "5"], servers.env(grace=0.6), log_path)
        async with asyncio.timeout(180):
            finished = asyncio.create_task(proc.wait())
            await asyncio.wait({finished, loader}, return_when=asyncio.FIRST_COMPLETED)
            if loader.done():
                await loader  # a write or read went wrong: its error, not a timeout
            assert await finished == 0, log_path.read_text()
        done.set()
        await loader
    finally:
        done.set()
        if not loader.done():
            loader.cancel()
        for view in (writer, reader):
            await view.close()
    log = log_path.read_text()
    assert "verified:" in log, log
    assert "fenced 'default'" in log, log
    # The load wrote under every phase of the move (map versions 1-3) and beyond.
    assert {1, 2, 3} <= versions, versions
    assert min(operations.values()) > 0, operations

    # Every record is where its shard now lives, and only there, as last written.
    on_a, on_b = rows(servers.a, servers.url_a), rows(servers.b, servers.url_b)
    assert not any(in_high(rid) for rid in on_a), "stray rows on the source"
    assert all(in_high(rid) for rid in on_b)
    assert {**on_a, **on_b} == expected
    final = await live_map(servers)
    assert final.moves == ()
    assert final.owner(0x800) == "b"
    assert final.owner(0x7FF) == "default"
    # Aliases stayed unique per owner, and a fresh process routes to the new server.
    fresh = servers.process()
    try:
        for owner in high_owners:
            holders = [r for r in expected.values() if r.owner == owner and r.alias == "first"]
            assert len(holders) <= 1
            if holders:
                assert (await fresh.get_by_alias(owner, "first")).id == holders[0].id
            else:
                with pytest.raises(AliasNotFound):
                    await fresh.get_by_alias(owner, "first")
        assert fresh.server_for_shard(owner_shard(high_owners[0])) == "b"
        assert await fresh.count_by_image(IMAGE) == len(expected)
    finally:
        await fresh.close()


def copy_total(stderr: str) -> int:
    """How many records the copy's progress bar counted in all."""
    totals = re.findall(r"^copy \[[#.]+\] \d+/(\d+)", stderr, re.MULTILINE)
    assert totals, stderr
    return int(totals[-1])


async def test_a_killed_migration_resumes_on_rerun(servers: Servers, tmp_path: Path) -> None:
    # Enough shards, copied two rows a transaction, that the copy lasts seconds.
    expected = await seed(servers.url_a, owners("resume", 300, high=True), 6)
    expected |= await seed(servers.url_a, owners("resume-low", 20, high=False), 6)
    high = {rid: r for rid, r in expected.items() if in_high(rid)}

    log_path = tmp_path / "migrate.log"
    args = [*MIGRATE, "--batch", "2", "--concurrency", "1"]
    proc = await spawn(args, servers.env(), log_path)
    control = servers.default()
    try:
        # Kill it once some shards, not all, are copied (the cursor says so).
        deadline = time.monotonic() + 120
        while True:
            assert proc.returncode is None, log_path.read_text()
            assert time.monotonic() < deadline, "the migration never saved a cursor"
            shard_map = await _map_or_none(control)
            move = shard_map.move_for(HIGH) if shard_map else None
            if move is not None and await SqlControlStore(control).head(cursor_key(move)):
                break
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await control.close()

    shard_map = await live_map(servers)
    assert [m.phase for m in shard_map.moves] == ["copying"]
    on_b = rows(servers.b, servers.url_b)
    assert 0 < len(on_b) < len(high), "the migration was not killed mid-copy"

    rerun = await run_pinhole(args, servers.env())
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming at phase 'copying'" in rerun.stdout
    # It picked up at the cursor: it copied fewer records than the range holds.
    assert copy_total(rerun.stderr) < len(high)

    on_a, on_b = rows(servers.a, servers.url_a), rows(servers.b, servers.url_b)
    assert on_b == high
    assert on_a == {rid: r for rid, r in expected.items() if rid not in high}
    final = await live_map(servers)
    assert final.moves == ()
    assert final.owner(0xFFF) == "b"
    store = servers.default()
    try:
        assert await SqlControlStore(store).head(cursor_key(_move(shard_map))) is None
    finally:
        await store.close()

    again = await run_pinhole(args, servers.env())
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout


def _move(shard_map: ShardMap) -> Move:
    move = shard_map.move_for(HIGH)
    assert move is not None
    return move


async def _map_or_none(store: MariaDbRecordStore) -> ShardMap | None:
    found = await store.control_get(SHARD_MAP_KEY)
    return None if found is None else ShardMap.from_json(found[0])


async def test_dry_run_reports_and_changes_nothing(servers: Servers) -> None:
    await seed(servers.url_a, owners("dry", 10, high=True) + owners("dry-low", 5, high=False), 3)
    before = (servers.a.sql(_dump(servers.url_a)), servers.b.sql(_dump(servers.url_b)))

    dry = await run_pinhole([*MIGRATE, "--dry-run"], servers.env())
    assert dry.returncode == 0, dry.stderr
    assert "dry run: would move record shards 800-fff from 'default' to 'b'" in dry.stdout
    assert ": 30 records in" in dry.stdout, dry.stdout
    assert "nothing written" in dry.stdout
    after = (servers.a.sql(_dump(servers.url_a)), servers.b.sql(_dump(servers.url_b)))
    assert after == before


def _dump(url: str) -> str:
    """Every table of the test database and every record in it, as the server sees them."""
    database = url.rsplit("/", 1)[1]
    return (
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{database}'"
        f" ORDER BY table_name; SELECT {COLUMNS} FROM {database}.records ORDER BY id;"
    )


async def test_a_second_migration_is_refused_while_one_runs(
    servers: Servers, tmp_path: Path
) -> None:
    await seed(servers.url_a, owners("two", 10, high=True) + owners("two-low", 10, high=False), 3)
    log_path = tmp_path / "first.log"
    first = await spawn(MIGRATE, servers.env(grace=2.0), log_path)
    try:
        async with asyncio.timeout(120):
            while "phase copying" not in log_path.read_text():
                assert first.returncode is None, log_path.read_text()
                await asyncio.sleep(0.05)
        second = await run_pinhole(
            ["db", "migrate", "--shards", "000-0ff", "--to", "b"], servers.env()
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert "another migration is running" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert "db migrate --shards 800-fff --to b" in second.stderr
        async with asyncio.timeout(120):
            assert await first.wait() == 0, log_path.read_text()
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    # Done and released: the next one runs.
    third = await run_pinhole(["db", "migrate", "--shards", "000-0ff", "--to", "b"], servers.env())
    assert third.returncode == 0, third.stdout + third.stderr
    final = await live_map(servers)
    assert final.owner(0x000) == "b"
    assert final.owner(0x800) == "b"
    assert final.owner(0x400) == "default"


async def test_a_move_between_two_other_servers_keeps_the_map_on_default(
    servers: Servers, mariadb_factory: Callable[[], MariaDbServer]
) -> None:
    """Three servers: shards c00-fff go from "b" to a new "c"; the live map
    stays on "default", which holds none of them."""
    third = mariadb_factory()
    url_c = third.url(third.create_database())
    store_c = MariaDbRecordStore.from_url(url_c, name="c")
    await store_c.upgrade_schema()
    await store_c.close()
    env = {
        **servers.env(),
        "PINHOLE_RECORD_SHARDS__SERVERS": json.dumps({"b": servers.url_b, "c": url_c}),
        "PINHOLE_RECORD_SHARDS__MAP": json.dumps({"800-fff": "b"}),
    }
    moving = ShardRange.parse("c00-fff")
    who = owners("three", 30, high=True)
    expected = await seed(servers.url_b, who, 4)
    assert {owner_shard(o) in moving for o in who} == {True, False}

    done = await run_pinhole(["db", "migrate", "--shards", "c00-fff", "--to", "c"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    on_b, on_c = rows(servers.b, servers.url_b), rows(third, url_c)
    assert {**on_b, **on_c} == expected
    assert all((rid >> 51) in moving for rid in on_c)
    assert not any((rid >> 51) in moving for rid in on_b)
    assert rows(servers.a, servers.url_a) == {}
    final = await live_map(servers)
    assert final.owner(0xC00) == "c"
    assert final.owner(0xBFF) == "b"
    assert final.owner(0x7FF) == "default"
