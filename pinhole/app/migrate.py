"""``pinhole migrate --shards A-B --to STORE``: move shards to another store, live.

The move goes through phases recorded in the live shard map (the control
document every process rereads every ``sharding.refresh_seconds``), and waits
two refresh intervals plus a grace after each change so that every process
follows before the next step:

1. ``copying``: writes and deletes go to both stores, reads to the source.
   Then every source object of the shards is copied and verified: the SHA-256
   of the copy read back must equal that of the source read again after the
   copy (a writer may have changed it meanwhile: then it is copied again).
   The last verified key is saved beside the map, so a rerun resumes there.
2. ``flipped``: reads from the target; writes still go to both stores.
3. ``cleaning``: the target owns the shards in the map; the source copies
   are deleted.
4. The move is removed from the map: done.

A crash at any point resumes from the recorded phase when the same command
runs again. One migration runs at a time, on any host (``pinhole.app.migrate_lease``).
``--dry-run`` reads and reports, and writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from pinhole.app.bounded import Watermark, for_each
from pinhole.app.migrate_lease import LeaseHeld, LeaseLost, holding_lease
from pinhole.app.progress import Progress
from pinhole.domain.keys import migration_cursor_key, shard_of_key
from pinhole.errors import ObjectNotFound
from pinhole.ports import BlobStore
from pinhole.settings import Settings
from pinhole.sharding import (
    DEFAULT_STORE,
    Move,
    Phase,
    ShardMap,
    ShardMapError,
    ShardRange,
    save_shard_map,
)
from storage.sharded import ShardedBlobStore

HELP = "Move a range of storage shards to another store, live, resumably."
_VERIFY_ATTEMPTS = 5


class MigrationError(RuntimeError):
    """The migration cannot go on; the message says why."""


def cursor_key(move: Move) -> str:
    return migration_cursor_key(str(move.shards), move.target)


@dataclass
class Migration:
    store: ShardedBlobStore
    shards: ShardRange
    target: str
    settle_seconds: float
    concurrency: int = 8
    out: TextIO = sys.stdout
    progress_stream: TextIO | None = None
    # Called after each phase is recorded; tests use it to watch.
    on_phase: Callable[[Phase], Awaitable[None]] | None = None

    # --- Planning. ----------------------------------------------------------

    async def plan(self) -> tuple[ShardMap, Move | None]:
        """The live map and the move to (re)start, or ``None`` if already done."""
        if self.target not in self.store.stores:
            raise MigrationError(
                f"store {self.target!r} is not configured (PINHOLE_SHARDING__STORES)"
            )
        shard_map = await self.store.shard_map(fresh=True)
        return shard_map, plan_move(shard_map, self.shards, self.target, "pinhole migrate")

    # --- Running. -----------------------------------------------------------

    async def run(self) -> None:
        shard_map, move = await self.plan()
        if move is None:
            print(
                f"shards {self.shards} already live on {self.target!r}: nothing to do",
                file=self.out,
            )
            return
        resuming = shard_map.move_for(self.shards) is not None
        print(
            f"moving shards {move.shards} from {move.source!r} to {move.target!r}"
            + (f", resuming at phase {move.phase!r}" if resuming else ""),
            file=self.out,
        )
        if move.phase == "copying":
            move = await self._enter(move, "copying")
            await self._copy(move)
            move = await self._enter(move, "flipped")
        elif move.phase == "flipped":
            await self._settle("flipped")
        if move.phase == "flipped":
            move = await self._enter(move, "cleaning")
        else:
            await self._settle("cleaning")
        await self._delete_source(move)
        await save_shard_map(self.store.control, (await self._fresh()).without_move(move.shards))
        await self.store.control.delete(cursor_key(move))
        print(f"done: shards {move.shards} live on {move.target!r}", file=self.out)

    async def _fresh(self) -> ShardMap:
        return await self.store.shard_map(fresh=True)

    async def _enter(self, move: Move, phase: Phase) -> Move:
        """Record ``phase`` in the live map, then wait until every process follows."""
        moved = Move(move.shards, move.source, move.target, phase)
        await save_shard_map(self.store.control, (await self._fresh()).with_move(moved))
        await self._settle(phase)
        return moved

    async def _settle(self, phase: Phase) -> None:
        print(f"phase {phase}: waiting {self.settle_seconds:.1f}s for every process", file=self.out)
        if self.on_phase is not None:
            await self.on_phase(phase)
        await asyncio.sleep(self.settle_seconds)

    async def _keys(self, source: BlobStore, after: str) -> list[str]:
        return [
            info.key
            async for info in source.list("")
            if info.key > after and shard_of_key(info.key) in self.shards
        ]

    async def _copy(self, move: Move) -> None:
        source, target = self.store.stores[move.source], self.store.stores[move.target]
        control = self.store.control
        after = await _read_cursor(control, move)
        keys = sorted(await self._keys(source, after))
        batch = max(1, self.concurrency)
        verified = Watermark(len(keys))
        saved = 0  # keys[:saved] are verified and the cursor says so
        saving = asyncio.Lock()

        async def save_cursor(upto: int) -> None:
            nonlocal saved
            async with saving:
                if upto <= saved:
                    return
                # Every key up to here is verified: a rerun starts after it.
                await control.put(
                    cursor_key(move),
                    json.dumps({"after": keys[upto - 1]}).encode(),
                    content_type="application/json",
                )
                saved = upto

        with Progress("copy", len(keys), stream=self.progress_stream) as progress:

            async def copy(item: tuple[int, str]) -> None:
                index, key = item
                progress.advance(1, await copy_verified(source, target, key))
                upto = verified.done(index)
                if upto - saved >= batch:
                    await save_cursor(upto)

            await for_each(enumerate(keys), copy, self.concurrency)
            await save_cursor(len(keys))

    async def _delete_source(self, move: Move) -> None:
        source = self.store.stores[move.source]
        keys = await self._keys(source, "")
        with Progress("delete old copies", len(keys), stream=self.progress_stream) as progress:

            async def delete(key: str) -> None:
                await source.delete(key)
                progress.advance(1, "deleted")

            await for_each(keys, delete, self.concurrency)


def plan_move(shard_map: ShardMap, shards: ShardRange, target: str, command: str) -> Move | None:
    """The move of ``shards`` to ``target`` to (re)start by ``shard_map``:
    the one under way, a new one in phase ``copying``, or ``None`` when they
    live on ``target`` already. ``MigrationError`` when another move holds any
    of them, or they live in several places. ``command`` names the command to
    rerun in messages (``pinhole migrate``, ``pinhole db migrate``)."""
    current = shard_map.move_for(shards)
    if current is not None:
        if current.target != target:
            raise MigrationError(
                f"shards {shards} are being moved to {current.target!r}; "
                f"finish that first ({command} --shards {shards} --to {current.target})"
            )
        return current
    for move in shard_map.moves:
        if move.shards.first <= shards.last and shards.first <= move.shards.last:
            raise MigrationError(f"shards {move.shards} are being moved already; finish that first")
    owners = {shard_map.owner(s) for s in range(shards.first, shards.last + 1)}
    if owners == {target}:
        return None
    if len(owners) > 1:
        raise MigrationError(
            f"shards {shards} live in several places ({', '.join(sorted(owners))}); "
            "move one range of one place at a time"
        )
    return Move(shards, owners.pop(), target, "copying")


async def _read_cursor(control: BlobStore, move: Move) -> str:
    try:
        stored = await control.get(cursor_key(move))
    except ObjectNotFound:
        return ""
    return str(json.loads(stored.body)["after"])


def _sha256(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


async def copy_verified(source: BlobStore, target: BlobStore, key: str) -> str:
    """Copy one object and check it; returns what happened ("copied" or "gone").

    Writers write both stores during the copy, so the copy never overwrites on
    its first try (a writer's newer bytes win) and is checked against the source
    as read *after* the copy: a mismatch means a writer changed it meanwhile,
    and the copy is redone from the source's current bytes."""
    for attempt in range(_VERIFY_ATTEMPTS):
        try:
            original = await source.get(key)
        except ObjectNotFound:
            # Deleted meanwhile (deletes go to both): drop any copy we made.
            await target.delete(key)
            return "gone"
        await target.put(
            key, original.body, content_type=original.info.content_type, if_absent=attempt == 0
        )
        try:
            copy = await target.get(key)
            again = await source.get(key)
        except ObjectNotFound:
            if await source.head(key) is None:
                await target.delete(key)
                return "gone"
            continue
        if _sha256(copy.body) == _sha256(again.body):
            return "copied"
    raise MigrationError(f"{key}: the copy does not verify after {_VERIFY_ATTEMPTS} attempts")


async def dry_run(store: ShardedBlobStore, shards: ShardRange, target: str, out: TextIO) -> None:
    """Say what a migration would do, from the live map and a listing; write nothing."""
    migration = Migration(store, shards, target, settle_seconds=0)
    _, move = await migration.plan()
    if move is None:
        print(f"dry run: shards {shards} already live on {target!r}; nothing to do", file=out)
        return
    count = size = 0
    async for info in store.stores[move.source].list(""):
        if shard_of_key(info.key) in shards:
            count += 1
            size += info.size
    print(
        f"dry run: would move shards {shards} from {move.source!r} to {target!r} "
        f"(starting at phase {move.phase!r}): {count} objects, {size} bytes; nothing written",
        file=out,
    )


async def run_migrate(
    settings: Settings,
    shards_text: str,
    target: str,
    *,
    dry: bool = False,
    concurrency: int = 8,
    out: TextIO = sys.stdout,
) -> int:
    from pinhole.app.wiring import build_sharded_store

    try:
        shards = ShardRange.parse(shards_text)
    except ShardMapError as exc:
        print(f"pinhole migrate: {exc}", file=sys.stderr)
        return 2
    if not settings.sharding.stores:
        print(
            "pinhole migrate: only one store is configured; name the others in "
            'PINHOLE_SHARDING__STORES (e.g. \'{"b": "s3://bucket-b"}\')',
            file=sys.stderr,
        )
        return 2
    store = build_sharded_store(settings.storage, settings.sharding)
    cfg = settings.sharding
    try:
        if dry:
            await dry_run(store, shards, target, out)
        else:
            migration = Migration(
                store,
                shards,
                target,
                settle_seconds=2 * cfg.refresh_seconds + cfg.grace_seconds,
                concurrency=concurrency,
                out=out,
            )
            # Refusals and "nothing to do" write nothing, not even a lease;
            # run() plans again under the lease, where the decisions count.
            _, move = await migration.plan()
            if move is None:
                await migration.run()
            else:
                what = f"migrate --shards {shards} --to {target}"
                async with holding_lease(store.control, what, cfg.lease_seconds):
                    await migration.run()
    except (MigrationError, LeaseHeld, LeaseLost) as exc:
        print(f"pinhole migrate: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    return 0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shards", required=True, metavar="A-B", help="shard range, e.g. 800-fff (or one shard)"
    )
    parser.add_argument(
        "--to",
        required=True,
        metavar="STORE",
        help=f"store name from PINHOLE_SHARDING__STORES (or {DEFAULT_STORE!r})",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would move; write nothing"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="objects copied at once (default: 8)"
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    from pinhole.app.command import load_settings

    settings = load_settings(args)
    sys.exit(
        asyncio.run(
            run_migrate(
                settings, args.shards, args.to, dry=args.dry_run, concurrency=args.concurrency
            )
        )
    )
