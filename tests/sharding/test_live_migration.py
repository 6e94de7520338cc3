"""Move half the shards (800-fff) to a second S3 server while real ingest,
transcoder and edge processes take uploads and serve variants.

Afterwards every accepted upload is ready, every fetch returned the bytes the
transcoder wrote (no fetch ever needed an on-the-fly render of a missing
variant), and the moved shards' objects are in the new bucket only.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips

from ingest.auth import token_digest
from pinhole.domain.ids import parse_image_id, shard_of
from pinhole.domain.keys import SHARD_MAP_KEY, shard_of_key
from pinhole.ports import BlobStore
from pinhole.sharding import ShardMap, ShardRange
from storage.s3 import S3BlobStore
from tests.support.clirun import run_pinhole, spawn
from tests.support.photos import photo_path
from tests.support.pipeline import wait_ready
from tests.support.processes import PinholeProcess, stack_env, start_pinhole
from tests.support.services import MotoS3, TansuBroker, free_port

pytestmark = pytest.mark.slow

TOKEN = "sharding-live-token"
HIGH = ShardRange.parse("800-fff")
BEFORE, DURING = 6, 14


def small_photos(count: int) -> list[bytes]:
    """Distinct small real-photo JPEGs: a quick ladder each (no preset upscales)."""
    base = pyvips.Image.thumbnail(str(photo_path("autumn-2560x1600.jpg")), 480).copy_memory()
    out = []
    for i in range(count):
        x, y = (i * 37) % (base.width - 160), (i * 23) % (base.height - 120)
        out.append(base.crop(x, y, 160, 120).write_to_buffer(".jpg", Q=85))
    assert len(set(out)) == count
    return out


@dataclass
class Stack:
    env: dict[str, str]
    ingest: PinholeProcess
    serve: PinholeProcess
    processes: list[PinholeProcess]
    bucket_a: str
    bucket_b: str


@pytest.fixture(scope="module")
def stack(
    tansu: TansuBroker,
    moto_s3: MotoS3,
    moto_b: MotoS3,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("logs")
    ingest_port, edge_port = free_port(), free_port()
    bucket_a, bucket_b = moto_s3.url("sharding-live-a"), moto_b.url("sharding-live-b")
    env = {
        **stack_env(
            storage=bucket_a,
            queue=tansu.url,
            cache="memory://",
            ingest_port=ingest_port,
            edge_port=edge_port,
            token_sha256=token_digest(TOKEN),
            topic_prefix="sharding-live",
            partitions=2,
        ),
        "PINHOLE_SHARDING__STORES": json.dumps({"b": bucket_b}),
        "PINHOLE_SHARDING__REFRESH_SECONDS": "0.5",
        "PINHOLE_SHARDING__GRACE_SECONDS": "0.5",
        # No in-process cache on the edge: every fetch reads the store.
        "PINHOLE_HOT_CACHE__L1_MAX_BYTES": "0",
    }
    started: list[PinholeProcess] = []
    try:
        started.append(start_pinhole("ingest", env, logs, port=ingest_port))
        started.append(start_pinhole("transcode", env, logs))
        started.append(start_pinhole("serve", env, logs, port=edge_port))
        yield Stack(env, started[0], started[2], started, bucket_a, bucket_b)
    finally:
        for process in started:
            process.stop()


@dataclass
class Traffic:
    accepted: list[str] = field(default_factory=list)  # status URLs
    ready: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> manifest
    first_bytes: dict[str, bytes] = field(default_factory=dict)  # variant URL -> body
    fetches: int = 0


async def upload(session: aiohttp.ClientSession, stack: Stack, body: bytes, t: Traffic) -> None:
    headers = {"Content-Type": "image/jpeg", "Authorization": f"Bearer {TOKEN}"}
    async with session.post(f"{stack.ingest.url}/v1/images", data=body, headers=headers) as resp:
        reply = await resp.json()
        assert resp.status == 202, reply
    t.accepted.append(reply["status_url"])


async def fetch(session: aiohttp.ClientSession, t: Traffic, variant: dict[str, Any]) -> None:
    async with session.get(variant["url"]) as resp:
        assert resp.status == 200, (variant["url"], await resp.text())
        body = await resp.read()
    assert len(body) == variant["bytes"], variant["url"]
    # The bytes of a variant URL never change, before, during or after the move.
    assert t.first_bytes.setdefault(variant["url"], body) == body, variant["url"]
    t.fetches += 1


async def fetch_all(session: aiohttp.ClientSession, t: Traffic) -> None:
    """Fetch every variant of every ready image, a few at a time."""
    variants = [v for m in list(t.ready.values()) for v in m["variants"]]
    for start in range(0, len(variants), 8):
        await asyncio.gather(*(fetch(session, t, v) for v in variants[start : start + 8]))


async def poll_ready(session: aiohttp.ClientSession, t: Traffic) -> None:
    for url in t.accepted:
        image_id = url.rsplit("/", 1)[-1]
        if image_id in t.ready:
            continue
        async with session.get(url) as resp:
            manifest = await resp.json()
            assert resp.status == 200, manifest
        assert manifest["status"] in ("pending", "ready"), manifest
        if manifest["status"] == "ready":
            t.ready[image_id] = manifest


async def keys_of(url: str) -> list[str]:
    store: BlobStore = S3BlobStore.from_url(url)
    try:
        return [info.key async for info in store.list("")]
    finally:
        await store.close()


async def test_moving_half_the_shards_under_load(stack: Stack, tmp_path: Path) -> None:
    photos = small_photos(BEFORE + DURING)
    t = Traffic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for body in photos[:BEFORE]:
            await upload(session, stack, body, t)
        for url in t.accepted:
            manifest = await wait_ready(session, url)
            t.ready[manifest["id"]] = manifest
        await fetch_all(session, t)

        migrate_log = tmp_path / "migrate.log"
        migrate = await spawn(
            ["migrate", "--shards", "800-fff", "--to", "b", "--concurrency", "16"],
            {**os.environ, **stack.env},
            migrate_log,
        )
        pending = list(photos[BEFORE:])
        uploaded_during = 0

        async def uploads() -> None:
            nonlocal uploaded_during
            while migrate.returncode is None and pending:
                await upload(session, stack, pending.pop(0), t)
                uploaded_during += 1
                await asyncio.sleep(0.1)

        async def fetches() -> None:
            # Round after round over the ready images, newest included, until it ends.
            while migrate.returncode is None:
                await poll_ready(session, t)
                for manifest in list(t.ready.values()):
                    if migrate.returncode is not None:
                        break
                    await asyncio.gather(*(fetch(session, t, v) for v in manifest["variants"]))
                    # Leave the two cores some room for the migration itself.
                    await asyncio.sleep(0.02)

        try:
            await asyncio.gather(uploads(), fetches())
        finally:
            if migrate.returncode is None:
                migrate.kill()
            await migrate.wait()
        assert migrate.returncode == 0, migrate_log.read_text()
        assert uploaded_during > 0
        for body in pending:  # whatever the migration left over, uploaded after it
            await upload(session, stack, body, t)

        for url in t.accepted:
            manifest = await wait_ready(session, url)
            assert manifest["status"] == "ready", manifest
            t.ready[manifest["id"]] = manifest
        await fetch_all(session, t)

        async with session.get(f"{stack.serve.url}/metrics") as resp:
            metrics = await resp.text()
    # No variant was ever missing: nothing was rendered at request time.
    assert "pinhole_renders_on_the_fly_total{" not in metrics

    ids = {parse_image_id(i) for i in t.ready}
    assert len(ids) == len(photos) == len(t.accepted)
    assert {shard_of(i) in HIGH for i in ids} == {True, False}
    assert t.fetches > 2 * 15 * len(ids)

    in_a, in_b = await keys_of(stack.bucket_a), await keys_of(stack.bucket_b)
    assert all(shard_of_key(k) in HIGH for k in in_b), [
        k for k in in_b if shard_of_key(k) not in HIGH
    ]
    assert not any(shard_of_key(k) in HIGH for k in in_a)
    for image_id in ids:
        here = in_b if shard_of(image_id) in HIGH else in_a
        mine = [k for k in here if image_id in k]
        # original, manifest and the 15 variants (pending markers are cleared)
        assert len([k for k in mine if k.startswith("variants/")]) == 15, image_id
        assert f"originals/{image_id[:2]}/{image_id[2:4]}/{image_id[4:6]}/{image_id}" in mine

    store = S3BlobStore.from_url(stack.bucket_a)
    try:
        final = ShardMap.from_json((await store.get(SHARD_MAP_KEY)).body)
    finally:
        await store.close()
    assert final.moves == ()
    assert final.owner(0x800) == "b"
    assert final.owner(0x7FF) == "default"

    stats = await run_pinhole(["stats", "--json"], {**os.environ, **stack.env})
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    assert report["total"]["images"] == len(ids)
    assert report["total"]["variants"] == 15 * len(ids)
    assert report["stray_copies"] == 0
    high = [i for i in ids if shard_of(i) in HIGH]
    assert report["stores"]["b"]["images"] == len(high)
    for process in stack.processes:
        assert process.proc.poll() is None, process.log_tail()
