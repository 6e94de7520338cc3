"""One BlobStore contract, run against every adapter, plus each adapter's own promises.

S3 tests talk to a real moto server (the session ``moto_s3`` fixture), one fresh
bucket per test so that tests never see each other's keys.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pinhole.errors import ObjectNotFound, StorageUnavailable
from pinhole.ports import BlobStore
from pinhole.sharding import seed_map
from storage.fs import FsBlobStore
from storage.s3 import S3BlobStore
from storage.sharded import ShardedBlobStore
from tests.support.services import MotoS3, free_port

# A bound on "does not hang" (botocore retries a refused connection with
# backoff), not a benchmark.
NO_HANG = 30.0

WEBP = "image/webp"


def _plain(
    request: pytest.FixtureRequest, kind: str, root: Path, bucket: str, moto: str = "moto_s3"
) -> BlobStore:
    if kind == "fs":
        return FsBlobStore(root)
    server: MotoS3 = request.getfixturevalue(moto)
    return S3BlobStore.from_url(server.url(bucket))


@pytest.fixture(params=["fs", "s3", "sharded-fs", "sharded-s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, unique_name: str
) -> AsyncIterator[BlobStore]:
    """Every adapter; ``sharded-*`` is a ShardedBlobStore over two stores of that
    kind (two moto servers for s3), half of the shards on each, so the contract
    holds across a shard map too."""
    kind = request.param.removeprefix("sharded-")
    adapter: BlobStore
    if not request.param.startswith("sharded-"):
        adapter = _plain(request, kind, tmp_path / "blobs", unique_name)
    else:
        a = _plain(request, kind, tmp_path / "a", unique_name + "-a")
        b = _plain(request, kind, tmp_path / "b", unique_name + "-b", "moto_b")
        # Tiny refresh: every operation sees a control document written just before.
        adapter = ShardedBlobStore(
            {"default": a, "b": b}, seed_map({"800-fff": "b"}, ["b"]), refresh_seconds=0.001
        )
    yield adapter
    await adapter.close()


async def listed(store: BlobStore, prefix: str) -> list[tuple[str, int]]:
    return [(info.key, info.size) async for info in store.list(prefix)]


# --- Contract: every adapter. ------------------------------------------------


def test_implements_the_port(store: BlobStore) -> None:
    assert isinstance(store, BlobStore)


async def test_ping(store: BlobStore) -> None:
    await store.ping()


@pytest.mark.parametrize("body", [b"", bytes(range(256)) * 4], ids=["empty", "every-byte"])
async def test_put_get_roundtrip(store: BlobStore, body: bytes) -> None:
    key = "variants/236x/ab/cd/ef/abcdef.webp"
    assert await store.put(key, body, content_type=WEBP) is True

    got = await store.get(key)
    assert got.body == body
    assert got.info.key == key
    assert got.info.size == len(body)
    assert got.info.content_type == WEBP
    # Unix seconds, not milliseconds or a naive local time.
    assert abs(got.info.last_modified - time.time()) < 24 * 3600

    head = await store.head(key)
    assert head is not None
    assert (head.key, head.size, head.content_type) == (key, len(body), WEBP)


async def test_put_overwrites(store: BlobStore) -> None:
    key = "manifests/ab/cd/ef/abcdef.json"
    assert await store.put(key, b'{"v": 1}', content_type="application/json")
    assert await store.put(key, b'{"v": 22}', content_type="application/json")
    got = await store.get(key)
    assert got.body == b'{"v": 22}'
    assert got.info.size == len(b'{"v": 22}')


async def test_if_absent_keeps_the_original(store: BlobStore) -> None:
    key = "variants/236x/ab/cd/ef/abcdef.webp"
    assert await store.put(key, b"first", content_type=WEBP, if_absent=True) is True
    assert await store.put(key, b"second", content_type=WEBP, if_absent=True) is False
    assert (await store.get(key)).body == b"first"


async def test_put_file_honours_if_absent(store: BlobStore, tmp_path: Path) -> None:
    key = "originals/ab/cd/ef/abcdef"
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    first.write_bytes(b"original bytes")
    second.write_bytes(b"other bytes")
    ct = "application/octet-stream"

    assert await store.put_file(key, first, content_type=ct, if_absent=True) is True
    assert await store.put_file(key, second, content_type=ct, if_absent=True) is False
    assert (await store.get(key)).body == b"original bytes"
    # Without if_absent it is a plain overwrite.
    assert await store.put_file(key, second, content_type=ct) is True
    assert (await store.get(key)).body == b"other bytes"


async def test_put_file_of_five_megabytes(store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    body = os.urandom(5 * 1024 * 1024)
    source.write_bytes(body)
    key = "originals/12/34/56/123456"

    assert await store.put_file(key, source, content_type="application/octet-stream")
    head = await store.head(key)
    assert head is not None
    assert head.size == len(body)
    assert (await store.get(key)).body == body


async def test_put_file_of_a_missing_source_is_not_an_outage(
    store: BlobStore, tmp_path: Path
) -> None:
    # A caller bug must not look like StorageUnavailable, which callers retry.
    with pytest.raises(FileNotFoundError):
        await store.put_file("k.bin", tmp_path / "nope", content_type="application/octet-stream")


async def test_head_of_a_missing_key_is_none(store: BlobStore) -> None:
    assert await store.head("variants/236x/no/such/key.webp") is None


async def test_get_of_a_missing_key_raises_object_not_found(store: BlobStore) -> None:
    with pytest.raises(ObjectNotFound) as info:
        await store.get("variants/236x/no/such/key.webp")
    assert info.value.key == "variants/236x/no/such/key.webp"


async def test_delete_then_get_raises_object_not_found(store: BlobStore) -> None:
    key = "variants/236x/ab/cd/ef/abcdef.webp"
    await store.put(key, b"x", content_type=WEBP)
    await store.delete(key)
    with pytest.raises(ObjectNotFound):
        await store.get(key)
    assert await store.head(key) is None


async def test_delete_of_a_missing_key_is_fine(store: BlobStore) -> None:
    await store.delete("variants/236x/no/such/key.webp")
    await store.delete("variants/236x/no/such/key.webp")


async def test_list_by_prefix(store: BlobStore) -> None:
    assert await listed(store, "variants/") == []

    bodies = {
        "variants/236x/cd/z.webp": b"zz",
        "variants/236x/ab/y.webp": b"yyy",
        "variants/236x/ab/x.webp": b"x",
        "variants/236xl/ab/x.webp": b"not under 236x/",
        "variants/474x/ab/x.webp": b"other preset",
        "manifests/ab/x.json": b"{}",
    }
    # Written out of order: the listing must sort, not echo insertion order.
    for key, body in bodies.items():
        await store.put(key, body, content_type=WEBP)

    assert await listed(store, "variants/236x/") == [
        ("variants/236x/ab/x.webp", 1),
        ("variants/236x/ab/y.webp", 3),
        ("variants/236x/cd/z.webp", 2),
    ]
    # A prefix need not end at a "directory".
    assert await listed(store, "variants/236x/ab/x") == [("variants/236x/ab/x.webp", 1)]
    assert await listed(store, "variants/236x") == [
        ("variants/236x/ab/x.webp", 1),
        ("variants/236x/ab/y.webp", 3),
        ("variants/236x/cd/z.webp", 2),
        ("variants/236xl/ab/x.webp", len(b"not under 236x/")),
    ]
    assert await listed(store, "variants/999x/") == []
    assert [key for key, _ in await listed(store, "")] == sorted(bodies)


async def test_concurrent_if_absent_puts_have_one_winner(store: BlobStore) -> None:
    key = "originals/ab/cd/ef/abcdef"
    results = await asyncio.gather(
        *(
            store.put(key, f"writer {i}".encode(), content_type="text/plain", if_absent=True)
            for i in range(10)
        )
    )
    assert results.count(True) == 1
    winner = results.index(True)
    assert (await store.get(key)).body == f"writer {winner}".encode()


# --- S3: failures surface as port errors. -------------------------------------


async def test_s3_unreachable_raises_storage_unavailable() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    store = S3BlobStore("pinhole-nowhere", endpoint_url=closed, create_bucket=False)
    try:
        # Concurrently, because botocore backs off between its retries of each.
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                store.ping(),
                store.get("k"),
                store.put("k", b"x", content_type="text/plain", if_absent=True),
                return_exceptions=True,
            ),
            NO_HANG,
        )
    finally:
        await store.close()
    assert [type(outcome) for outcome in outcomes] == [StorageUnavailable] * 3


async def test_s3_creates_its_bucket_on_first_use(moto_s3: MotoS3, unique_name: str) -> None:
    first = S3BlobStore.from_url(moto_s3.url(unique_name))
    second = S3BlobStore.from_url(moto_s3.url(unique_name))
    try:
        await first.put("k", b"v", content_type="text/plain")
        # The bucket now exists: a second store must accept that, not fail.
        await second.ping()
        assert (await second.get("k")).body == b"v"
    finally:
        await first.close()
        await second.close()


async def test_s3_without_create_reports_a_missing_bucket(
    moto_s3: MotoS3, unique_name: str
) -> None:
    store = S3BlobStore.from_url(moto_s3.url(unique_name) + "&create=0")
    try:
        with pytest.raises(StorageUnavailable):
            await store.ping()
    finally:
        await store.close()


def test_s3_from_url() -> None:
    store = S3BlobStore.from_url(
        "s3://images?endpoint=http://127.0.0.1:9000&region=eu-west-1&create=0"
    )
    assert store.bucket == "images"
    assert store.endpoint_url == "http://127.0.0.1:9000"
    assert store.region == "eu-west-1"
    assert store.create_bucket is False

    defaults = S3BlobStore.from_url("s3://images")
    assert (defaults.endpoint_url, defaults.region, defaults.create_bucket) == (
        None,
        "us-east-1",
        True,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://images",
        "s3://",
        "s3://images/some/path",
        "s3://images?endpont=http://typo:9000",
        "s3://images?create=maybe",
        "s3://images?access_key=only-half",
        "s3://images?endpoint=ftp://127.0.0.1",
    ],
)
def test_s3_from_url_refuses(url: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        S3BlobStore.from_url(url)


# --- fs: keys are paths, so they are checked. ----------------------------------


@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../escape", "/etc/passwd", "a\\b", "a//b", "", "a/.tmp-x"],
)
async def test_fs_refuses_unsafe_keys(tmp_path: Path, key: str) -> None:
    store = FsBlobStore(tmp_path / "root")
    with pytest.raises(ValueError, match="invalid blob key"):
        await store.put(key, b"x", content_type="text/plain")
    with pytest.raises(ValueError, match="invalid blob key"):
        await store.get(key)
    with pytest.raises(ValueError, match="invalid blob key"):
        await store.head(key)
    with pytest.raises(ValueError, match="invalid blob key"):
        await store.delete(key)
    assert not (tmp_path / "escape").exists()


async def test_fs_leaves_no_temp_files(tmp_path: Path) -> None:
    store = FsBlobStore(tmp_path / "root")
    key = "variants/236x/ab/x.webp"
    await store.put(key, b"a", content_type=WEBP)
    await store.put(key, b"b", content_type=WEBP)
    await store.put(key, b"c", content_type=WEBP, if_absent=True)
    assert [p.name for p in (tmp_path / "root/variants/236x/ab").iterdir()] == ["x.webp"]


async def test_fs_ping_reports_an_unwritable_root(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    store = FsBlobStore(blocker / "root")
    with pytest.raises(StorageUnavailable):
        await store.ping()


def test_fs_from_url() -> None:
    assert FsBlobStore.from_url("file://./var/pinhole").root == Path("var/pinhole")
    assert FsBlobStore.from_url("file:///srv/pinhole").root == Path("/srv/pinhole")
    with pytest.raises(ValueError, match="file://"):
        FsBlobStore.from_url("s3://bucket")
