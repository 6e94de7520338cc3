"""Where a ShardedBlobStore's objects really go (its BlobStore contract runs in
tests/contract/test_blob_store.py).

Two pairs of real stores: two fs roots, and two S3 buckets on two moto servers.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pinhole.domain.ids import ImageId, image_id_for_bytes, shard_of
from pinhole.domain.keys import manifest_key, original_key
from pinhole.errors import ObjectNotFound, StorageUnavailable
from pinhole.ports import BlobStore
from pinhole.sharding import Move, ShardMap, ShardRange, save_shard_map, seed_map
from storage.fs import FsBlobStore
from storage.s3 import S3BlobStore
from storage.sharded import ShardedBlobStore
from tests.support.services import MotoS3

HIGH = ShardRange.parse("800-fff")
JSON = "application/json"


@dataclass
class Pair:
    sharded: ShardedBlobStore
    a: BlobStore  # "default"
    b: BlobStore


@pytest.fixture(params=["fs", "s3"])
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path, unique_name: str
) -> AsyncIterator[Pair]:
    a: BlobStore
    b: BlobStore
    if request.param == "fs":
        a, b = FsBlobStore(tmp_path / "a"), FsBlobStore(tmp_path / "b")
    else:
        moto_a: MotoS3 = request.getfixturevalue("moto_s3")
        moto_b: MotoS3 = request.getfixturevalue("moto_b")
        a = S3BlobStore.from_url(moto_a.url(unique_name + "-a"))
        b = S3BlobStore.from_url(moto_b.url(unique_name + "-b"))
    # Tiny refresh: every operation sees a control document written just before.
    sharded = ShardedBlobStore(
        {"default": a, "b": b}, seed_map({"800-fff": "b"}, ["b"]), refresh_seconds=0.001
    )
    yield Pair(sharded, a, b)
    await sharded.close()


def ids_on_both_halves(count: int) -> list[ImageId]:
    ids = [image_id_for_bytes(str(i).encode()) for i in range(count)]
    assert {shard_of(i) in HIGH for i in ids} == {True, False}
    return ids


async def keys_in(store: BlobStore) -> list[str]:
    return [info.key async for info in store.list("")]


async def test_objects_live_in_the_store_of_their_shard(pair: Pair) -> None:
    ids = ids_on_both_halves(24)
    for image_id in ids:
        await pair.sharded.put(original_key(image_id), image_id.encode(), content_type=JSON)
        await pair.sharded.put(manifest_key(image_id), b"{}", content_type=JSON)

    high = sorted(k for i in ids if shard_of(i) in HIGH for k in (original_key(i), manifest_key(i)))
    low = sorted(
        k for i in ids if shard_of(i) not in HIGH for k in (original_key(i), manifest_key(i))
    )
    assert await keys_in(pair.b) == high
    assert await keys_in(pair.a) == low
    # The merged listing is one sorted listing of both.
    assert await keys_in(pair.sharded) == sorted(high + low)
    assert [i.key async for i in pair.sharded.list("originals/")] == sorted(
        original_key(i) for i in ids
    )
    for image_id in ids:
        assert (await pair.sharded.get(original_key(image_id))).body == image_id.encode()
        await pair.sharded.delete(original_key(image_id))
        assert await pair.sharded.head(original_key(image_id)) is None
    assert await keys_in(pair.sharded) == sorted(manifest_key(i) for i in ids)


async def _publish(store: ShardedBlobStore, shard_map: ShardMap) -> None:
    """Save a phase change and have ``store`` follow it now. In service a process
    follows within ``refresh_seconds``, and a migration waits longer than that
    before it relies on the new phase; without the wait here, a save faster than
    the refresh interval (a local disk) left the first write on the old map."""
    await save_shard_map(store.control, shard_map)
    await store.shard_map(fresh=True)


async def test_a_move_routes_reads_writes_and_listings_by_phase(pair: Pair) -> None:
    ids = ids_on_both_halves(16)
    store = ShardedBlobStore(  # everything on "default" to begin with
        {"default": pair.a, "b": pair.b}, seed_map({}, ["b"]), refresh_seconds=0.001
    )
    high = [i for i in ids if shard_of(i) in HIGH]
    for image_id in ids:
        await store.put(manifest_key(image_id), b"v1", content_type=JSON)
    assert await keys_in(pair.b) == []

    move = Move(HIGH, "default", "b", "copying")
    await _publish(store, (await store.shard_map()).with_move(move))
    # Copying: writes and deletes reach both stores; reads and listings stay on default.
    for image_id in high:
        await store.put(manifest_key(image_id), b"v2", content_type=JSON)
    assert await keys_in(pair.b) == sorted(manifest_key(i) for i in high)
    assert (await pair.b.get(manifest_key(high[0]))).body == b"v2"
    await store.delete(manifest_key(high[0]))
    assert await pair.a.head(manifest_key(high[0])) is None
    assert await pair.b.head(manifest_key(high[0])) is None
    await pair.b.put(manifest_key(high[1]), b"only in b", content_type=JSON)
    assert (await store.get(manifest_key(high[1]))).body == b"v2"
    listed = [info.key async for info in store.list("manifests/")]
    assert listed == sorted(manifest_key(i) for i in ids if i != high[0])

    flipped = (await store.shard_map()).with_move(Move(HIGH, "default", "b", "flipped"))
    await _publish(store, flipped)
    # Flipped: reads come from b; writes still reach default for lagging readers.
    assert (await store.get(manifest_key(high[1]))).body == b"only in b"
    await store.put(manifest_key(high[1]), b"v3", content_type=JSON)
    assert (await pair.a.get(manifest_key(high[1]))).body == b"v3"
    assert [info.key async for info in store.list("manifests/")] == listed

    cleaning = (await store.shard_map()).with_move(Move(HIGH, "default", "b", "cleaning"))
    await _publish(store, cleaning)
    await store.put(manifest_key(high[1]), b"v4", content_type=JSON)
    assert (await pair.a.get(manifest_key(high[1]))).body == b"v3"
    assert (await store.get(manifest_key(high[1]))).body == b"v4"
    # The control document lives on default and is listed from there only.
    assert "control/shardmap.json" in await keys_in(store)


async def test_a_map_naming_an_unknown_store_is_refused_not_guessed(pair: Pair) -> None:
    image_id = next(i for i in ids_on_both_halves(8) if shard_of(i) in HIGH)
    await save_shard_map(
        pair.a, seed_map({}, []).with_move(Move(HIGH, "default", "elsewhere", "flipped"))
    )
    with pytest.raises(StorageUnavailable, match="elsewhere"):
        await pair.sharded.get(original_key(image_id))
    with pytest.raises(StorageUnavailable, match="elsewhere"):
        await pair.sharded.put(original_key(image_id), b"x", content_type=JSON)


async def test_the_map_is_reread_after_refresh_seconds(tmp_path: Path) -> None:
    a, b = FsBlobStore(tmp_path / "a"), FsBlobStore(tmp_path / "b")
    image_id = next(i for i in ids_on_both_halves(8) if shard_of(i) in HIGH)
    body = hashlib.sha256(b"x").digest()
    await b.put(original_key(image_id), body, content_type=JSON)
    # A long refresh: the first map read is kept, so the flip is not seen yet.
    slow = ShardedBlobStore({"default": a, "b": b}, seed_map({}, ["b"]), refresh_seconds=3600)
    with pytest.raises(ObjectNotFound):
        await slow.get(original_key(image_id))
    await save_shard_map(a, seed_map({"800-fff": "b"}, ["b"]))
    with pytest.raises(ObjectNotFound):
        await slow.get(original_key(image_id))
    await slow.shard_map(fresh=True)
    assert (await slow.get(original_key(image_id))).body == body
