"""``pinhole stats``: images, variants and bytes per shard, per store, and in total.

Sharding makes this report hard (no single listing holds everything), so it
lists every configured store and attributes each key to its shard by the key
alone, counting a key only in the store that serves its reads in the live map.
Copies a migration has not yet cleaned up are counted apart, not twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from pinhole.app.progress import Progress
from pinhole.domain.keys import ORIGINALS_PREFIX, VARIANTS_PREFIX, shard_of_key
from pinhole.ports import BlobStore
from pinhole.settings import Settings
from pinhole.sharding import ShardMap

HELP = "Report images, variants and bytes per storage shard, per store and in total."


@dataclass
class Tally:
    images: int = 0
    variants: int = 0
    objects: int = 0
    bytes: int = 0

    def add(self, key: str, size: int) -> None:
        self.objects += 1
        self.bytes += size
        if key.startswith(ORIGINALS_PREFIX):
            self.images += 1
        elif key.startswith(VARIANTS_PREFIX):
            self.variants += 1


@dataclass
class Report:
    shards: dict[int, Tally] = field(default_factory=dict)
    stores: dict[str, Tally] = field(default_factory=dict)
    total: Tally = field(default_factory=Tally)
    # Objects outside any image shard (control documents).
    unsharded: Tally = field(default_factory=Tally)
    # Copies in a store that does not serve their shard (a migration under way).
    stray_copies: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "shards": {f"{shard:03x}": asdict(t) for shard, t in sorted(self.shards.items())},
            "stores": {name: asdict(t) for name, t in sorted(self.stores.items())},
            "total": asdict(self.total),
            "unsharded": asdict(self.unsharded),
            "stray_copies": self.stray_copies,
        }


async def collect(
    stores: Mapping[str, BlobStore], shard_map: ShardMap, *, progress: Progress
) -> Report:
    report = Report()
    for name in sorted(stores):
        report.stores[name] = Tally()
    for name, store in sorted(stores.items()):
        async for info in store.list(""):
            progress.advance(1, name)
            shard = shard_of_key(info.key)
            if shard_map.route(shard).read != name:
                report.stray_copies += 1
                continue
            report.stores[name].add(info.key, info.size)
            report.total.add(info.key, info.size)
            if shard is None:
                report.unsharded.add(info.key, info.size)
            else:
                report.shards.setdefault(shard, Tally()).add(info.key, info.size)
    return report


def _row(label: str, t: Tally) -> str:
    return f"{label:<12} {t.images:>9} {t.variants:>9} {t.objects:>9} {t.bytes:>14}"


def render_table(report: Report, shard_map: ShardMap) -> str:
    header = f"{'':<12} {'images':>9} {'variants':>9} {'objects':>9} {'bytes':>14}"
    lines = ["Per shard (store)", header]
    for shard, t in sorted(report.shards.items()):
        lines.append(_row(f"{shard:03x} ({shard_map.route(shard).read})", t))
    lines += ["", "Per store", header]
    lines += [_row(name, t) for name, t in sorted(report.stores.items())]
    lines += ["", _row("total", report.total)]
    lines.append(
        f"{len(report.shards)} shards with objects of 4096; "
        f"{report.unsharded.objects} unsharded objects; "
        f"{report.stray_copies} copies awaiting a migration's clean-up"
    )
    return "\n".join(lines)


async def run_stats(
    settings: Settings, *, as_json: bool, out: TextIO = sys.stdout, err: TextIO | None = None
) -> int:
    from pinhole.app.wiring import build_sharded_store

    store = build_sharded_store(settings.storage, settings.sharding)
    try:
        shard_map = await store.shard_map(fresh=True)
        with Progress("listing objects", stream=err) as progress:
            report = await collect(store.stores, shard_map, progress=progress)
    finally:
        await store.close()
    if as_json:
        print(json.dumps(report.to_json(), indent=2), file=out)
    else:
        print(render_table(report, shard_map), file=out)
    return 0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    from pinhole.app.command import load_settings

    settings = load_settings(args)
    sys.exit(asyncio.run(run_stats(settings, as_json=args.json)))
