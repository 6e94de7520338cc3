"""``pinhole stats`` against a known set of images spread over two fs stores."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

from pinhole.app.stats import run_stats
from pinhole.domain.ids import ImageId, image_id_for_bytes, shard_of
from pinhole.domain.keys import manifest_key, original_key, pending_key, variant_key
from pinhole.domain.ladder import PRESETS, Format
from pinhole.ports import BlobStore
from pinhole.settings import Settings, Sharding
from pinhole.sharding import Move, ShardRange, save_shard_map, seed_map
from storage.fs import FsBlobStore
from storage.sharded import ShardedBlobStore
from tests.support.clirun import run_pinhole

HIGH = ShardRange.parse("800-fff")
OCTETS = "application/octet-stream"
FORMATS = (Format.AVIF, Format.WEBP, Format.JPEG)


async def write_image(store: BlobStore, image_id: ImageId, *, pending: bool) -> int:
    """An original, its whole ladder and a manifest; returns the bytes written."""
    objects = {original_key(image_id): b"o" * 1000, manifest_key(image_id): b"{}"}
    for preset in PRESETS:
        for fmt in FORMATS:
            objects[variant_key(preset, image_id, fmt)] = b"v" * 100
    if pending:
        objects[pending_key(image_id)] = b""
    for key, body in objects.items():
        await store.put(key, body, content_type=OCTETS)
    return sum(len(body) for body in objects.values())


async def test_stats_per_shard_per_store_and_total(tmp_path: Path) -> None:
    a, b = FsBlobStore(tmp_path / "a"), FsBlobStore(tmp_path / "b")
    store = ShardedBlobStore(
        {"default": a, "b": b}, seed_map({"800-fff": "b"}, ["b"]), refresh_seconds=0.001
    )
    ids = [image_id_for_bytes(str(i).encode()) for i in range(20)]
    sizes = {i: await write_image(store, i, pending=n % 4 == 0) for n, i in enumerate(ids)}
    variants_each = len(PRESETS) * len(FORMATS)
    per_shard = Counter(shard_of(i) for i in ids)

    settings = Settings(
        storage=f"file://{tmp_path / 'a'}",
        sharding=Sharding(stores={"b": f"file://{tmp_path / 'b'}"}, map={"800-fff": "b"}),
    )
    out, err = io.StringIO(), io.StringIO()
    assert await run_stats(settings, as_json=True, out=out, err=err) == 0
    report = json.loads(out.getvalue())

    assert set(report["shards"]) == {f"{s:03x}" for s in per_shard}
    for shard, count in per_shard.items():
        row = report["shards"][f"{shard:03x}"]
        assert row["images"] == count
        assert row["variants"] == count * variants_each
        assert row["bytes"] == sum(sizes[i] for i in ids if shard_of(i) == shard)
    high = [i for i in ids if shard_of(i) in HIGH]
    assert report["stores"]["b"]["images"] == len(high)
    assert report["stores"]["default"]["images"] == len(ids) - len(high)
    assert report["total"]["images"] == len(ids)
    assert report["total"]["variants"] == len(ids) * variants_each
    assert report["total"]["bytes"] == sum(sizes.values())
    assert report["stray_copies"] == 0
    assert "listing objects" in err.getvalue()

    # Mid-migration copies (shards 000-7ff being copied to b) are not counted twice.
    await save_shard_map(
        a,
        (await store.shard_map()).with_move(Move(ShardRange(0, 0x7FF), "default", "b", "copying")),
    )
    low = next(i for i in ids if shard_of(i) not in HIGH)
    await b.put(original_key(low), b"o" * 1000, content_type=OCTETS)
    out = io.StringIO()
    assert await run_stats(settings, as_json=True, out=out, err=io.StringIO()) == 0
    again = json.loads(out.getvalue())
    assert again["total"]["images"] == len(ids)
    assert again["stray_copies"] == 1
    assert again["unsharded"]["objects"] == 1  # the control document
    await store.close()


async def test_stats_cli_prints_a_table(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PINHOLE_STORAGE": f"file://{tmp_path / 'a'}",
        "PINHOLE_SHARDING__STORES": json.dumps({"b": f"file://{tmp_path / 'b'}"}),
    }
    done = await run_pinhole(["stats"], env, within_seconds=60)
    assert done.returncode == 0, done.stderr
    assert "Per store" in done.stdout
    assert "total" in done.stdout
