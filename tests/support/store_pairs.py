"""Two real stores for the shard tests: two fs roots, or two S3 buckets on two
moto servers (the ``stores`` fixture in conftest.py), and what the tests do
with them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from pinhole.domain.ids import ImageId, image_id_for_bytes, shard_of
from pinhole.ports import BlobStore
from pinhole.settings import Settings, Sharding
from pinhole.sharding import ShardRange, seed_map
from storage.fs import FsBlobStore
from storage.s3 import S3BlobStore
from storage.sharded import ShardedBlobStore

HIGH = ShardRange.parse("800-fff")
OCTETS = "application/octet-stream"
REFRESH = 0.05


@dataclass
class Stores:
    a: BlobStore
    b: BlobStore
    urls: tuple[str, str]

    def process(self, refresh: float = REFRESH) -> ShardedBlobStore:
        """One more process's view: its own store instance with its own map age."""
        a, b = reopen(self.urls[0]), reopen(self.urls[1])
        return ShardedBlobStore(
            {"default": a, "b": b}, seed_map({}, ["b"]), refresh_seconds=refresh
        )


def reopen(url: str) -> BlobStore:
    return FsBlobStore.from_url(url) if url.startswith("file://") else S3BlobStore.from_url(url)


def image_ids(count: int, salt: str = "") -> list[ImageId]:
    ids = [image_id_for_bytes(f"{salt}{i}".encode()) for i in range(count)]
    assert {shard_of(i) in HIGH for i in ids} == {True, False}
    return ids


async def contents(store: BlobStore, prefix: str = "") -> dict[str, bytes]:
    return {info.key: (await store.get(info.key)).body async for info in store.list(prefix)}


def settings_for(stores: Stores) -> Settings:
    return Settings(
        storage=stores.urls[0],
        sharding=Sharding(stores={"b": stores.urls[1]}, refresh_seconds=REFRESH, grace_seconds=0),
    )


def cli_env(stores: Stores) -> dict[str, str]:
    return {
        **os.environ,
        "PINHOLE_STORAGE": stores.urls[0],
        "PINHOLE_SHARDING__STORES": json.dumps({"b": stores.urls[1]}),
        "PINHOLE_SHARDING__REFRESH_SECONDS": "0.1",
        "PINHOLE_SHARDING__GRACE_SECONDS": "0",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
