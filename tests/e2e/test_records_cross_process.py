"""Owners and records across real processes: `pinhole ingest`, `transcode` and
`serve` over tansu, moto and Redis, with the record store on two real MariaDB
shard servers. Owners on both shards upload, list, alias and delete; then one
shard server is killed and the other keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from ingest.auth import token_digest
from pinhole.domain.record import owner_shard
from tests.support.clirun import run_pinhole
from tests.support.mariadb import MariaDbServer
from tests.support.photos import load_photo
from tests.support.pipeline import decode, wait_ready
from tests.support.processes import PinholeProcess, stack_env, start_pinhole
from tests.support.services import MotoS3, RedisServer, TansuBroker, free_port

pytestmark = pytest.mark.slow

TOKEN = "records-e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def owner_in(first: int, last: int, prefix: str) -> str:
    n = 0
    while not first <= owner_shard(f"{prefix}{n}") <= last:
        n += 1
    return f"{prefix}{n}"


ALICE = owner_in(0x000, 0x7FF, "alice")  # shard server "default"
BOB = owner_in(0x800, 0xBFF, "bob")  # shard server "b", the one killed at the end
CAROL = owner_in(0xC00, 0xFFF, "carol")  # "b", until her shards move to "default"


@dataclass
class Stack:
    ingest: PinholeProcess
    transcode: PinholeProcess
    serve: PinholeProcess
    shard_b: MariaDbServer
    env: dict[str, str]


@pytest.fixture(scope="module")
def stack(
    tansu: TansuBroker,
    moto_s3: MotoS3,
    redis_server: RedisServer,
    mariadb: MariaDbServer,
    mariadb_factory: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("records-e2e")
    shard_b: MariaDbServer = mariadb_factory()
    ingest_port, edge_port = free_port(), free_port()
    env = {
        **stack_env(
            storage=moto_s3.url("pinhole-records-e2e"),
            queue=tansu.url,
            cache=redis_server.url,
            ingest_port=ingest_port,
            edge_port=edge_port,
            token_sha256=token_digest(TOKEN),
            topic_prefix="records-e2e",
            partitions=2,
        ),
        "PINHOLE_RECORDS": mariadb.url(mariadb.create_database()),
        "PINHOLE_RECORD_SHARDS__SERVERS": json.dumps({"b": shard_b.url(shard_b.create_database())}),
        "PINHOLE_RECORD_SHARDS__MAP": json.dumps({"800-fff": "b"}),
        # Every process rereads the live record shard map this often.
        "PINHOLE_RECORD_SHARDS__REFRESH_SECONDS": "0.5",
        "PINHOLE_RECORD_SHARDS__GRACE_SECONDS": "0.5",
    }
    upgraded = asyncio.run(run_pinhole(["db", "upgrade"], {**os.environ, **env}))
    assert upgraded.returncode == 0, upgraded.stderr
    started: list[PinholeProcess] = []
    try:
        ingest = start_pinhole("ingest", env, logs, port=ingest_port)
        started.append(ingest)
        transcode = start_pinhole("transcode", env, logs)
        started.append(transcode)
        serve = start_pinhole("serve", env, logs, port=edge_port)
        started.append(serve)
        yield Stack(ingest, transcode, serve, shard_b, env)
    finally:
        for process in started:
            process.stop()


async def _json(resp: aiohttp.ClientResponse) -> Any:
    return json.loads(await resp.text())


async def upload_as(
    session: aiohttp.ClientSession, stack: Stack, photo: str, **query: str
) -> tuple[int, Any]:
    data = load_photo(photo).data
    async with session.post(
        f"{stack.ingest.url}/v1/images",
        data=data,
        params=query,
        headers={**AUTH, "Content-Type": "image/jpeg"},
    ) as resp:
        return resp.status, await _json(resp)


async def call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, url, headers=AUTH, **kwargs) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


async def test_owners_on_both_shards_upload_list_alias_and_delete(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    base = stack.ingest.url
    status, alices = await upload_as(
        session, stack, "autumn-2560x1600.jpg", owner=ALICE, alias="avatar"
    )
    assert status == 202, alices
    status, bobs = await upload_as(
        session, stack, "autumn-2560x1600.jpg", owner=BOB, metadata='{"album": "trips"}'
    )
    assert status in (200, 202), bobs
    # Same bytes, two owners on two shard servers: one image, two records.
    assert alices["id"] == bobs["id"]
    assert alices["record"]["id"] != bobs["record"]["id"]
    manifest = await wait_ready(session, alices["status_url"])
    assert manifest["status"] == "ready"
    # The record's URLs are the ladder's, served by the edge process.
    url = alices["record"]["image"]["urls"]["236x"]
    async with session.get(url, headers={"Accept": "image/webp"}) as resp:
        assert resp.status == 200
        assert decode(await resp.read()).width == 236

    status, second = await upload_as(session, stack, "pastelhills-3200x2000.jpg", owner=BOB)
    assert status == 202, second
    status, page = await call(
        session, "GET", f"{base}/v1/owners/{BOB}/images", params={"limit": "1"}
    )
    assert status == 200
    assert [r["id"] for r in page["records"]] == [second["record"]["id"]]
    status, rest = await call(
        session, "GET", f"{base}/v1/owners/{BOB}/images", params={"cursor": page["cursor"]}
    )
    assert [r["id"] for r in rest["records"]] == [bobs["record"]["id"]]
    assert rest["cursor"] is None

    # Bob's alias moves to his second record; Alice's is untouched.
    status, moved = await call(
        session,
        "PUT",
        f"{base}/v1/owners/{BOB}/aliases/avatar",
        json={"record_id": bobs["record"]["id"]},
    )
    assert (status, moved["alias"]) == (200, "avatar")
    status, moved = await call(
        session,
        "PUT",
        f"{base}/v1/owners/{BOB}/aliases/avatar",
        json={"record_id": second["record"]["id"]},
    )
    assert (status, moved["id"]) == (200, second["record"]["id"])
    status, alias = await call(session, "GET", f"{base}/v1/owners/{ALICE}/aliases/avatar")
    assert (status, alias["id"]) == (200, alices["record"]["id"])

    # Deleting Alice's record leaves the image, which Bob's record still names.
    status, _ = await call(session, "DELETE", f"{base}/v1/records/{alices['record']['id']}")
    assert status == 204
    status, _ = await call(session, "GET", f"{base}/v1/images/{alices['id']}")
    assert status == 200
    # Bob is deleted in full.
    status, gone = await call(session, "DELETE", f"{base}/v1/owners/{BOB}")
    assert (status, gone) == (200, {"owner": BOB, "removed": 2, "more": False})
    status, page = await call(session, "GET", f"{base}/v1/owners/{BOB}/images")
    assert (status, page["records"]) == (200, [])


async def test_shards_move_between_servers_under_uploads_and_nothing_is_lost(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    """Carol's shards (c00-fff) move from "b" to "default" with `pinhole db
    migrate` while she uploads; every upload that got its 2xx has its record
    afterwards, listed from the new server."""
    base = stack.ingest.url
    photos = ["kay-dark-1080x1920-alpha.png", "flow-5120x2880.jpg", "autumn-2560x1600.jpg"]
    made: list[str] = []
    moving = asyncio.Event()

    async def upload_throughout() -> None:
        n = 0
        while not moving.is_set() or n < 6:
            status, answer = await upload_as(
                session, stack, photos[n % len(photos)], owner=CAROL, metadata=f'{{"n": {n}}}'
            )
            # During a hand-over a write may be told to retry; it never gets a 2xx
            # without its record.
            if status in (200, 202):
                made.append(answer["record"]["id"])
            else:
                assert status == 503, answer
            n += 1

    writer = asyncio.create_task(upload_throughout())
    migrate = await run_pinhole(
        ["db", "migrate", "--shards", "c00-fff", "--to", "default"],
        {**os.environ, **stack.env},
        within_seconds=240,
    )
    during = len(made)
    moving.set()
    await writer
    assert migrate.returncode == 0, migrate.stderr
    assert during >= 2, "the uploads did not overlap the move"
    records: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        status, page = await call(session, "GET", f"{base}/v1/owners/{CAROL}/images", params=params)
        assert status == 200, page
        records += [r["id"] for r in page["records"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert sorted(records) == sorted(made)
    assert len(made) >= 6
    # With "b" gone, Carol's records are still there: they live on "default" now.
    stack.shard_b.kill()
    status, page = await call(
        session, "GET", f"{base}/v1/owners/{CAROL}/images", params={"limit": "1000"}
    )
    assert status == 200, page
    assert sorted(r["id"] for r in page["records"]) == sorted(made)


async def test_a_shard_server_killed_leaves_the_other_shard_serving(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    base = stack.ingest.url
    stack.shard_b.kill()  # already, by the move's test; again is harmless
    status, error = await upload_as(session, stack, "flow-dark-720x1440-portrait.jpg", owner=BOB)
    assert (status, error["error"]["code"]) == (503, "record-store-unavailable")
    status, error = await call(session, "GET", f"{base}/v1/owners/{BOB}/images")
    assert (status, error["error"]["code"]) == (503, "record-store-unavailable")
    status, answer = await upload_as(session, stack, "flow-dark-720x1440-portrait.jpg", owner=ALICE)
    assert status == 202, answer
    status, page = await call(session, "GET", f"{base}/v1/owners/{ALICE}/images")
    assert status == 200
    assert answer["record"]["id"] in [r["id"] for r in page["records"]]
    # Ingest stays in rotation: the records check degrades, it does not fail.
    async with session.get(f"{base}/readyz") as resp:
        body = await resp.json()
        assert resp.status == 200, body
    # Uploads without an owner, and the image pipeline, go on.
    manifest = await wait_ready(session, answer["status_url"])
    assert manifest["status"] == "ready"
