"""The record store down under an edge that serves private images: a real MariaDB
(stopped mid-test), the edge app built by the runtime code of `pinhole serve`,
a local-disk store. The edge keeps answering what it last learned of each image
(public served, private refused) past its visibility TTL, and answers an image it
knows nothing of `503 record-store-unavailable`, never guessing (server.privacy)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pyvips

from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import ImageId
from pinhole.records.mariadb import MariaDbRecordStore
from pinhole.settings import RecordShards
from tests.support.edge import edge_settings, running_edge
from tests.support.mariadb import MariaDbServer
from tests.support.photos import Photo
from tests.support.seed import seed_image

TTL_SECONDS = 0.5


async def _seed(root: Path, n: int) -> ImageId:
    data = pyvips.Image.black(200 + n, 100).write_to_buffer(".jpg")
    store = build_blob_store(f"file://{root}")
    try:
        return await seed_image(store, Photo(f"down-{n}", data, 200 + n, 100, False))
    finally:
        await store.close()


def _url(base: str, image_id: str) -> str:
    return f"{base}/236x/{image_id[0:2]}/{image_id[2:4]}/{image_id[4:6]}/{image_id}.jpg"


async def _answer(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as resp:
        body = await resp.read()
        code = "" if resp.status == 200 else (await resp.json())["error"]["code"]
        assert resp.status == 200 or b"Traceback" not in body
        return resp.status, code


async def test_the_record_store_down_keeps_what_the_edge_knew_and_guesses_nothing(
    tmp_path: Path, mariadb_factory: Callable[[], MariaDbServer]
) -> None:
    server = mariadb_factory()
    records_url = server.url(server.create_database())
    records = MariaDbRecordStore.from_url(records_url, name="default")
    await records.upgrade_schema()
    public_id, private_id, unknown_id = [await _seed(tmp_path, n) for n in range(3)]
    await records.create("alice", public_id)
    await records.create("alice", private_id, private=True)
    await records.close()
    settings = edge_settings(
        tmp_path, signing_keys=["k"], visibility_ttl_seconds=TTL_SECONDS
    ).model_copy(
        update={
            "records": records_url,
            "record_shards": RecordShards(connect_timeout_seconds=0.5, timeout_seconds=0.5),
        }
    )
    async with running_edge(settings) as edge, aiohttp.ClientSession() as session:
        assert await _answer(session, _url(edge.url, public_id)) == (200, "")
        assert await _answer(session, _url(edge.url, private_id)) == (403, "image-private")
        server.stop()
        await asyncio.sleep(TTL_SECONDS * 2)
        for _ in range(3):
            assert await _answer(session, _url(edge.url, public_id)) == (200, "")
            assert await _answer(session, _url(edge.url, private_id)) == (403, "image-private")
        async with session.get(_url(edge.url, unknown_id)) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"]
            assert (await resp.json())["error"]["code"] == "record-store-unavailable"
