"""``pinhole migrate``: moves shards while other "processes" read and write, resumes
after a kill, and changes nothing in a dry run.

Two pairs of real stores: two fs roots, and two S3 buckets on two moto servers.
The live, cross-process migration with real ingest/transcode/serve processes is
in test_live_migration.py.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import signal
import time
from pathlib import Path

import pytest

from pinhole.app.migrate import Migration, cursor_key, run_migrate
from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.keys import SHARD_MAP_KEY, manifest_key, original_key
from pinhole.errors import ObjectNotFound
from pinhole.ports import BlobStore
from pinhole.sharding import ShardMap, ShardRange
from tests.support.clirun import run_pinhole, spawn
from tests.support.store_pairs import (
    HIGH,
    OCTETS,
    REFRESH,
    Stores,
    cli_env,
    contents,
    image_ids,
    settings_for,
)


async def test_a_live_move_loses_nothing_and_serves_nothing_wrong(stores: Stores) -> None:
    seeded = image_ids(24)
    expected: dict[str, bytes] = {}
    for image_id in seeded:
        expected[original_key(image_id)] = os.urandom(64) + image_id.encode()
        await stores.a.put(
            original_key(image_id), expected[original_key(image_id)], content_type=OCTETS
        )

    migrator, writer_view, reader_view = stores.process(), stores.process(), stores.process()
    done = asyncio.Event()
    rounds = {"reader": 0, "writer": 0}
    round_done = asyncio.Condition()

    async def count_round(name: str) -> None:
        async with round_done:
            rounds[name] += 1
            round_done.notify_all()

    versions_read: set[int] = set()

    async def overlap(_phase: object) -> None:
        # Each phase overlaps whole rounds of reads and writes, however slow they are.
        start = dict(rounds)
        async with round_done:
            await round_done.wait_for(lambda: all(rounds[n] >= start[n] + 2 for n in rounds))

    async def reader() -> None:
        # Another process fetches the seeded objects throughout: never missing, never wrong.
        while not done.is_set():
            for image_id in seeded:
                got = await reader_view.get(original_key(image_id))
                assert got.body == expected[original_key(image_id)]
                versions_read.add((await reader_view.shard_map()).version)
            await count_round("reader")
            await asyncio.sleep(0)

    async def writer() -> None:
        # A third process writes, overwrites and deletes, and each write must be
        # visible at once to the reading process, whatever map age either has.
        rng = random.Random(7)
        mine: list[str] = []
        n = 0
        while not done.is_set():
            await count_round("writer")
            n += 1
            image_id = image_id_for_bytes(f"new{n}".encode())
            key = manifest_key(image_id)
            await writer_view.put(key, f"v1 {n}".encode(), content_type=OCTETS)
            mine.append(key)
            assert (await reader_view.get(key)).body == f"v1 {n}".encode()
            victim = rng.choice(mine)
            if rng.random() < 0.3:
                await writer_view.delete(victim)
                mine.remove(victim)
                with pytest.raises(ObjectNotFound):
                    await reader_view.get(victim)
            else:
                await writer_view.put(victim, f"v2 {n}".encode(), content_type=OCTETS)
                assert (await reader_view.get(victim)).body == f"v2 {n}".encode()
        for key in mine:
            expected[key] = (await reader_view.get(key)).body

    async def migrate() -> None:
        try:
            await Migration(
                migrator,
                HIGH,
                "b",
                settle_seconds=3 * REFRESH,
                concurrency=4,
                out=io.StringIO(),
                on_phase=overlap,
            ).run()
        finally:
            done.set()

    try:
        await asyncio.gather(reader(), writer(), migrate())
    finally:
        for view in (migrator, writer_view, reader_view):
            await view.close()
    # The reading process read under every phase of the move (map versions 1-3).
    assert {1, 2, 3} <= versions_read

    # Every object is where its shard now lives, and only there, with its bytes.
    in_a, in_b = await contents(stores.a), await contents(stores.b)
    objects = {k: v for k, v in {**in_a, **in_b}.items() if not k.startswith("control/")}
    assert objects == expected
    assert all(shard_of_key_in(k, HIGH) for k in in_b)
    assert not any(shard_of_key_in(k, HIGH) for k in in_a)
    shard_map = ShardMap.from_json(in_a[SHARD_MAP_KEY])
    assert shard_map.moves == ()
    assert shard_map.owner(0x800) == "b"
    assert shard_map.owner(0x7FF) == "default"
    assert [k for k in in_a if k.startswith("control/migrations/")] == []


def shard_of_key_in(key: str, shards: ShardRange) -> bool:
    from pinhole.domain.keys import shard_of_key

    return shard_of_key(key) in shards


async def test_dry_run_changes_nothing(stores: Stores) -> None:
    for image_id in image_ids(12):
        await stores.a.put(original_key(image_id), b"x" * 10, content_type=OCTETS)
    before = (await contents(stores.a), await contents(stores.b))
    out = io.StringIO()
    assert await run_migrate(settings_for(stores), "800-fff", "b", dry=True, out=out) == 0
    assert "dry run: would move shards 800-fff" in out.getvalue()
    assert "0 objects" not in out.getvalue()
    assert (await contents(stores.a), await contents(stores.b)) == before


async def test_migrate_refuses_what_it_cannot_do(stores: Stores) -> None:
    settings = settings_for(stores)
    assert await run_migrate(settings, "800-fff", "nowhere", out=io.StringIO()) == 1
    assert await run_migrate(settings, "8-fff", "b", out=io.StringIO()) == 2
    assert await contents(stores.a) == {}


MIGRATE = ["migrate", "--shards", "800-fff", "--to", "b"]


async def _count(store: BlobStore) -> int:
    return len([info async for info in store.list("originals/")])


# On fs only: the S3 pair runs the same code path, and this one is about the crash.
@pytest.mark.parametrize("stores", ["fs"], indirect=True)
async def test_a_killed_migration_resumes_and_finishes(stores: Stores, tmp_path: Path) -> None:
    # Enough keys that the copy lasts a few seconds, not a few hundred
    # milliseconds a descheduled test could sleep through before its kill.
    ids = image_ids(2000, salt="resume")
    bodies = {original_key(i): os.urandom(2048) for i in ids}
    await asyncio.gather(*(stores.a.put(k, v, content_type=OCTETS) for k, v in bodies.items()))
    high = {k: v for k, v in bodies.items() if shard_of_key_in(k, HIGH)}

    log_path = tmp_path / "migrate.log"
    proc = await spawn([*MIGRATE, "--concurrency", "1"], cli_env(stores), log_path)
    try:
        # Kill it once some, not all, of the copies are made.
        deadline = time.monotonic() + 120
        while await _count(stores.b) < 10:
            assert proc.returncode is None, log_path.read_text()
            assert time.monotonic() < deadline, "the migration never started copying"
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    copied = await _count(stores.b)
    assert copied < len(high), "the migration finished before it could be killed mid-copy"
    shard_map = ShardMap.from_json((await stores.a.get(SHARD_MAP_KEY)).body)
    assert [m.phase for m in shard_map.moves] == ["copying"]
    move = shard_map.moves[0]
    assert (await stores.a.head(cursor_key(move))) is not None

    rerun = await run_pinhole(MIGRATE, cli_env(stores))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming at phase 'copying'" in rerun.stdout
    # The progress bar ran (plain lines off a terminal).
    assert "copy [" in rerun.stderr

    in_a, in_b = await contents(stores.a, "originals/"), await contents(stores.b, "originals/")
    assert in_b == high
    assert in_a == {k: v for k, v in bodies.items() if k not in high}
    final = ShardMap.from_json((await stores.a.get(SHARD_MAP_KEY)).body)
    assert final.moves == ()
    assert final.owner(0xFFF) == "b"
    assert await stores.a.head(cursor_key(move)) is None

    again = await run_pinhole(MIGRATE, cli_env(stores))
    assert again.returncode == 0
    assert "nothing to do" in again.stdout
