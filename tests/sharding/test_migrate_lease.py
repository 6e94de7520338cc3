"""One ``pinhole migrate`` at a time: the lease in the control store, on real
stores (fs and moto). The killed-migration test in test_migrate.py covers the
other case: a dead holder on the same host is taken over at once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from pinhole.app.migrate import run_migrate
from pinhole.app.migrate_lease import Holder, LeaseLost, holding_lease
from pinhole.domain.keys import migration_lease_key, original_key
from tests.support.clirun import spawn
from tests.support.store_pairs import OCTETS, Stores, cli_env, contents, image_ids, settings_for

JSON = "application/json"


async def _seed(stores: Stores, salt: str) -> None:
    for image_id in image_ids(20, salt=salt):
        await stores.a.put(original_key(image_id), b"x" * 10, content_type=OCTETS)


async def _lease(stores: Stores, generation: int) -> Holder:
    return Holder.from_json((await stores.a.get(migration_lease_key(generation))).body)


async def test_a_second_migration_is_refused_while_one_runs(
    stores: Stores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two migrations would each rewrite the shard map and lose the other's
    change, even on ranges that do not overlap."""
    await _seed(stores, "two-at-once")
    log_path = tmp_path / "first.log"
    env = {**cli_env(stores), "PINHOLE_SHARDING__GRACE_SECONDS": "2"}
    first = await spawn(["migrate", "--shards", "800-fff", "--to", "b"], env, log_path)
    try:
        async with asyncio.timeout(120):
            while "phase copying" not in log_path.read_text():
                assert first.returncode is None, log_path.read_text()
                await asyncio.sleep(0.05)
        # The first holds the lease from before its first phase to its end.
        assert await run_migrate(settings_for(stores), "000-0ff", "b") == 1
        err = capsys.readouterr().err
        assert "another migration is running" in err
        assert f"pid {first.pid}" in err
        assert "migrate --shards 800-fff --to b" in err
        async with asyncio.timeout(120):
            assert await first.wait() == 0, log_path.read_text()
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    assert (await _lease(stores, 1)).released
    # Done and released: the next one takes the next generation.
    assert await run_migrate(settings_for(stores), "000-0ff", "b") == 0
    assert (await _lease(stores, 2)).released


async def test_another_hosts_lease_is_honoured_until_it_lapses(
    stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    await _seed(stores, "other-host")
    settings = settings_for(stores)
    elsewhere = Holder("other-host", 4242, "migrate --shards 000-7ff --to b", time.time())
    await stores.a.put(migration_lease_key(1), elsewhere.to_json(), content_type=JSON)
    before = await contents(stores.b)

    assert await run_migrate(settings, "800-fff", "b") == 1
    assert "pid 4242 on other-host" in capsys.readouterr().err
    assert await contents(stores.b) == before  # refused before writing anything

    lapsed = {**json.loads(elsewhere.to_json()), "heartbeat": time.time() - 3600}
    await stores.a.put(migration_lease_key(1), json.dumps(lapsed).encode(), content_type=JSON)
    assert await run_migrate(settings, "800-fff", "b") == 0
    assert (await _lease(stores, 2)).released
    assert (await _lease(stores, 1)).host == "other-host"  # generations stay


async def test_a_holder_that_was_taken_over_stops(stores: Stores) -> None:
    """A holder that stalled past the lease and lost it stops at its next
    heartbeat, before it writes anything more."""

    async def stalled() -> None:
        async with holding_lease(stores.a, "stalled", stale_seconds=0.3) as lease:
            newer = Holder("other-host", 1, "the one that took over", time.time())
            await stores.a.put(
                migration_lease_key(lease.generation + 1), newer.to_json(), content_type=JSON
            )
            await asyncio.sleep(60)  # the migration's work, cancelled

    async with asyncio.timeout(30):
        with pytest.raises(LeaseLost, match="took the lease over"):
            await stalled()
    # It did not mark the newer holder's lease, nor its own, released.
    assert not (await _lease(stores, 1)).released
    assert not (await _lease(stores, 2)).released


async def test_a_live_lease_is_renewed_and_released(stores: Stores) -> None:
    async with holding_lease(stores.a, "renewing", stale_seconds=0.3) as lease:
        first = (await _lease(stores, lease.generation)).heartbeat
        async with asyncio.timeout(30):
            while (await _lease(stores, lease.generation)).heartbeat == first:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    assert (await _lease(stores, 1)).released
