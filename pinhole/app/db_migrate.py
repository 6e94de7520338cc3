"""``pinhole db migrate --shards A-B --to SERVER``: move record shards between
database servers, live, resumably.

The same phases as ``pinhole migrate`` for blobs, recorded in the live record
shard map (a control document on the "default" record server that every
process rereads every ``record_shards.refresh_seconds``), with a wait of two
refresh intervals plus a grace after each change so every process follows:

1. ``copying``: the source stays the shards' authority; every write of them
   is mirrored to the target inside the source's transaction. The target's
   rows of the range are cleared first (an abandoned attempt may have left
   some); then each shard's rows are copied in id order (an id's top bits are
   its shard, so id order is (shard, id) order), a batch at a time, each batch
   replacing the same span on the target while the source holds its rows. A
   cursor (the last shard whose every row is copied) is saved as shards
   finish, so a rerun after a kill resumes there; a batch copied twice is
   harmless. Then the per-shard counts of both servers must agree.
2. ``flipped``: reads from the target; writes as before.
3. Before ``cleaning``, the source's shards are fenced: fencing waits for the
   writes in flight, and every later write that would still make the source
   the authority is refused, reroutes and lands on the target. With both
   servers still, the per-shard counts are checked again (and any difference
   copied over), and only then is ``cleaning`` written: the target alone.
   The source's rows of the range are deleted.
4. The cursor is dropped and the move removed from the map: done. The fences
   stay up (a later move from that server resets them).

One migration at a time (the lease of ``pinhole.app.migrate_lease``, in the
record control table). ``--dry-run`` reads and reports, and writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from pinhole.app.bounded import Watermark, for_each
from pinhole.app.migrate import MigrationError, plan_move
from pinhole.app.migrate_lease import LeaseHeld, LeaseLost, holding_lease
from pinhole.app.progress import Progress
from pinhole.domain.keys import migration_cursor_key
from pinhole.errors import ObjectNotFound, RecordStoreUnavailable
from pinhole.records.sharded import ShardedRecordStore
from pinhole.records.sql import SqlRecordStore, shard_ids
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

HELP = "Move a range of record shards to another database server, live, resumably."
COMMAND = "pinhole db migrate"
_VERIFY_ATTEMPTS = 5
_JSON = "application/json"


def cursor_key(move: Move) -> str:
    """In the record control table, which has names of its own: the same name
    ``pinhole migrate`` uses in the blob store names a different document."""
    return migration_cursor_key(str(move.shards), move.target)


def _counts_differ(a: dict[int, int], b: dict[int, int]) -> list[int]:
    return sorted(s for s in a.keys() | b.keys() if a.get(s, 0) != b.get(s, 0))


@dataclass
class RecordMigration:
    store: ShardedRecordStore
    shards: ShardRange
    target: str
    settle_seconds: float
    concurrency: int = 4
    batch: int = 500
    out: TextIO = sys.stdout
    progress_stream: TextIO | None = None
    # Called after each phase is recorded; tests use it to watch.
    on_phase: Callable[[Phase], Awaitable[None]] | None = None

    # --- Planning. ----------------------------------------------------------

    async def plan(self) -> tuple[ShardMap, Move | None]:
        """The live map and the move to (re)start, or ``None`` if already done."""
        if self.target not in self.store.servers:
            raise MigrationError(
                f"server {self.target!r} is not configured (PINHOLE_RECORD_SHARDS__SERVERS)"
            )
        shard_map = await self.store.shard_map(fresh=True)
        return shard_map, plan_move(shard_map, self.shards, self.target, COMMAND)

    def _servers(self, move: Move) -> tuple[SqlRecordStore, SqlRecordStore]:
        return self.store.servers[move.source], self.store.servers[move.target]

    @property
    def _ids(self) -> tuple[int, int]:
        return shard_ids(self.shards.first, self.shards.last)

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
            f"moving record shards {move.shards} from {move.source!r} to {move.target!r}"
            + (f", resuming at phase {move.phase!r}" if resuming else ""),
            file=self.out,
            flush=True,
        )
        source, target = self._servers(move)
        # Both answer, with the schema this code needs, before anything is written.
        await asyncio.gather(source.ping(), target.ping())
        await source.ensure_control_tables()
        await target.ensure_control_tables()
        if not resuming:
            # A cursor left by a finished move of the same range is not this move's.
            await self.store.control.delete(cursor_key(move))
            cleared = await self._delete_range(target, "clear target")
            if cleared:
                print(f"cleared {cleared} rows an earlier try left on the target", file=self.out)
            await source.prepare_fences(self.shards.first, self.shards.last)
        if move.phase == "copying":
            move = await self._enter(move, "copying")
            await self._copy(move)
            await self._verify(move)
            move = await self._enter(move, "flipped")
        elif move.phase == "flipped":
            # Killed after fencing, perhaps: flipped writes go to the source
            # again while every process settles, and are fenced just below.
            await source.set_fences(self.shards.first, self.shards.last, fenced=False)
            await self._settle("flipped")
        if move.phase == "flipped":
            await self._hand_over(move)
            move = await self._enter(move, "cleaning")
        else:
            await self._settle("cleaning")
        await self._delete_range(source, "delete old copies")
        # The cursor first: once the move leaves the map, a rerun has nothing to
        # do and would leave it behind. The fences stay up: a process that could
        # not reread the map and still routes by copying or flipped is refused by
        # the old server instead of writing rows there that nobody reads.
        await self.store.control.delete(cursor_key(move))
        await save_shard_map(self.store.control, (await self._fresh()).without_move(move.shards))
        print(f"done: record shards {move.shards} live on {move.target!r}", file=self.out)

    async def _fresh(self) -> ShardMap:
        return await self.store.shard_map(fresh=True)

    async def _enter(self, move: Move, phase: Phase) -> Move:
        """Record ``phase`` in the live map, then wait until every process follows."""
        moved = Move(move.shards, move.source, move.target, phase)
        await save_shard_map(self.store.control, (await self._fresh()).with_move(moved))
        await self._settle(phase)
        return moved

    async def _settle(self, phase: Phase) -> None:
        print(
            f"phase {phase}: waiting {self.settle_seconds:.1f}s for every process",
            file=self.out,
            flush=True,
        )
        if self.on_phase is not None:
            await self.on_phase(phase)
        await asyncio.sleep(self.settle_seconds)

    # --- Copying. -----------------------------------------------------------

    async def _read_cursor(self, move: Move) -> int:
        """The last record id below which every row is copied (before the range: none)."""
        try:
            stored = await self.store.control.get(cursor_key(move))
        except ObjectNotFound:
            return self._ids[0] - 1
        return int(json.loads(stored.body)["after"])

    async def _copy_shard(
        self, source: SqlRecordStore, target: SqlRecordStore, shard: int, progress: Progress
    ) -> None:
        after, last = shard_ids(shard, shard)
        after -= 1
        while after < last:
            copied, after = await source.copy_range(target, after, last, self.batch)
            progress.advance(copied, "copied")

    async def _copy(self, move: Move) -> None:
        """Copy every shard that had rows when the copying phase had settled;
        rows made since are mirrored by their writers."""
        source, target = self._servers(move)
        resume_after = await self._read_cursor(move)
        counts = await source.count_by_shard(self.shards.first, self.shards.last)
        todo = [s for s in sorted(counts) if shard_ids(s, s)[1] > resume_after]
        done = Watermark(len(todo))
        saved = 0  # todo[:saved] are copied and the cursor says so
        saving = asyncio.Lock()

        async def save_cursor(upto: int) -> None:
            nonlocal saved
            async with saving:
                if upto <= saved:
                    return
                after = shard_ids(todo[upto - 1], todo[upto - 1])[1]
                body = json.dumps({"after": after, "shard": f"{todo[upto - 1]:03x}"}).encode()
                await self.store.control.put(cursor_key(move), body, content_type=_JSON)
                saved = upto

        total = sum(counts[s] for s in todo)
        with Progress("copy", total, stream=self.progress_stream) as progress:

            async def copy(item: tuple[int, int]) -> None:
                index, shard = item
                await self._copy_shard(source, target, shard, progress)
                await save_cursor(done.done(index))

            await for_each(enumerate(todo), copy, self.concurrency)

    async def _compare(self, move: Move) -> tuple[dict[int, int], list[int]]:
        source, target = self._servers(move)
        first, last = self.shards.first, self.shards.last
        ours, theirs = await asyncio.gather(
            source.count_by_shard(first, last), target.count_by_shard(first, last)
        )
        return ours, _counts_differ(ours, theirs)

    async def _verify(self, move: Move) -> None:
        """Per-shard counts on both servers agree, or the differing shards are
        copied again: a write caught between its mirror and its commit shows as
        a difference for a moment; a mirror that failed, until copied again."""
        source, target = self._servers(move)
        for attempt in range(_VERIFY_ATTEMPTS):
            counts, differ = await self._compare(move)
            if not differ:
                print(
                    f"verified: {sum(counts.values())} records in {len(counts)} shards, "
                    "the same count per shard on both servers",
                    file=self.out,
                    flush=True,
                )
                return
            await asyncio.sleep(0.1 * (attempt + 1))
            with Progress("copy again", None, stream=self.progress_stream) as progress:
                for shard in differ:
                    await self._copy_shard(source, target, shard, progress)
        raise MigrationError(
            f"shards {', '.join(f'{s:03x}' for s in differ)} do not verify after "
            f"{_VERIFY_ATTEMPTS} copies; nothing was flipped, rerun to try again"
        )

    async def _hand_over(self, move: Move) -> None:
        """Fence the source's shards, then check both servers, still, agree."""
        source, target = self._servers(move)
        first, last = self.shards.first, self.shards.last
        await source.set_fences(first, last, fenced=True)
        try:
            counts, differ = await self._compare(move)
            if differ:
                with Progress("copy again", None, stream=self.progress_stream) as progress:
                    for shard in differ:
                        await self._copy_shard(source, target, shard, progress)
                counts, differ = await self._compare(move)
            if differ:
                raise MigrationError(
                    f"shards {', '.join(f'{s:03x}' for s in differ)} differ with the source "
                    "fenced; the source is unfenced and still the authority, rerun to try again"
                )
        except BaseException:
            await source.set_fences(first, last, fenced=False)
            raise
        print(
            f"fenced {move.source!r}: {sum(counts.values())} records in {len(counts)} shards "
            "the same on both servers",
            file=self.out,
            flush=True,
        )

    async def _delete_range(self, server: SqlRecordStore, label: str) -> int:
        counts = await server.count_by_shard(self.shards.first, self.shards.last)
        with Progress(label, sum(counts.values()), stream=self.progress_stream) as progress:

            async def delete(shard: int) -> None:
                after, last = shard_ids(shard, shard)
                after -= 1
                while after < last:
                    deleted, after = await server.delete_range(after, last, self.batch)
                    progress.advance(deleted, "deleted")

            await for_each(sorted(counts), delete, self.concurrency)
        return progress.done


async def dry_run(store: ShardedRecordStore, shards: ShardRange, target: str, out: TextIO) -> None:
    """Say what a migration would do, from the live map and counts; write nothing."""
    migration = RecordMigration(store, shards, target, settle_seconds=0)
    _, move = await migration.plan()
    if move is None:
        print(f"dry run: shards {shards} already live on {target!r}; nothing to do", file=out)
        return
    counts = await store.servers[move.source].count_by_shard(shards.first, shards.last)
    print(
        f"dry run: would move record shards {shards} from {move.source!r} to {target!r} "
        f"(starting at phase {move.phase!r}): {sum(counts.values())} records in "
        f"{len(counts)} shards; nothing written",
        file=out,
    )
    for shard in sorted(counts, key=lambda s: (-counts[s], s))[:10]:
        print(f"  shard {shard:03x}: {counts[shard]} records", file=out)


async def run_db_migrate(
    settings: Settings,
    shards_text: str,
    target: str,
    *,
    dry: bool = False,
    concurrency: int = 4,
    batch: int = 500,
    out: TextIO = sys.stdout,
) -> int:
    from pinhole.app.wiring import build_sharded_record_store

    try:
        shards = ShardRange.parse(shards_text)
    except ShardMapError as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 2
    if not settings.record_shards.servers:
        print(
            f"{COMMAND}: only one record server is configured; name the others in "
            'PINHOLE_RECORD_SHARDS__SERVERS (e.g. \'{"b": "mysql://user:pw@db-2/pinhole"}\')',
            file=sys.stderr,
        )
        return 2
    if not 1 <= batch <= 10_000:
        print(f"{COMMAND}: --batch must be 1..10000, not {batch}", file=sys.stderr)
        return 2
    cfg = settings.record_shards
    store = build_sharded_record_store(settings.records, cfg)
    try:
        if dry:
            await dry_run(store, shards, target, out)
        else:
            migration = RecordMigration(
                store,
                shards,
                target,
                settle_seconds=2 * cfg.refresh_seconds + cfg.grace_seconds,
                concurrency=concurrency,
                batch=batch,
                out=out,
            )
            # Refusals and "nothing to do" write nothing, not even a lease;
            # run() plans again under the lease, where the decisions count.
            _, move = await migration.plan()
            if move is None:
                await migration.run()
            else:
                await store.servers[DEFAULT_STORE].ensure_control_tables()
                what = f"db migrate --shards {shards} --to {target}"
                async with holding_lease(store.control, what, cfg.lease_seconds):
                    await migration.run()
    except (MigrationError, LeaseHeld, LeaseLost, RecordStoreUnavailable) as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
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
        metavar="SERVER",
        help=f"server name from PINHOLE_RECORD_SHARDS__SERVERS (or {DEFAULT_STORE!r})",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would move; write nothing"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="shards copied at once (default: 4)"
    )
    parser.add_argument(
        "--batch", type=int, default=500, help="records per copy transaction (default: 500)"
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    from pinhole.app.command import load_settings

    settings = load_settings(args)
    sys.exit(
        asyncio.run(
            run_db_migrate(
                settings,
                args.shards,
                args.to,
                dry=args.dry_run,
                concurrency=args.concurrency,
                batch=args.batch,
            )
        )
    )
