"""Private records across real processes: a `pinhole ingest` and two `pinhole
serve` edges sharing a local-disk store, a SQLite record store, a real Redis hot
cache and a real Kafka-protocol broker (tansu) for the events.

An image every record of which is private is served only for a valid, expiring
signature, `Cache-Control: private`, and never enters Redis; the record and
manifest APIs hand out such URLs; a change of visibility reaches every edge
through `image.visibility` well inside the edges' own 60 s visibility TTL; and a
public record of the same bytes makes the image public (README, "Private records").
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from ingest.auth import token_digest
from pinhole import cache_policy
from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import ImageId
from pinhole.domain.ladder import PRESETS_BY_NAME, Format
from pinhole.domain.signing import signed_ladder_url
from server.signing import sign_path, signed_tail
from tests.support.photos import Photo
from tests.support.processes import PinholeProcess, start_pinhole, wait_for_log
from tests.support.seed import seed_image
from tests.support.services import RedisServer, TansuBroker, free_port

KEY = "private-records-signing-key"
UPLOAD_URL_KEY = "private-records-upload-url-key"
TOKEN = "private-records-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The edges trust what they learned of an image this long: anything honoured
# much sooner was the image.visibility event.
TTL_SECONDS = 60.0
WITHIN_SECONDS = 15.0
PRESET = PRESETS_BY_NAME["236x"]


@dataclass
class Roles:
    root: Path
    ingest: PinholeProcess
    edges: list[PinholeProcess]
    redis_url: str


@pytest.fixture(scope="module")
def roles(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, tansu: TansuBroker
) -> Iterator[Roles]:
    root = tmp_path_factory.mktemp("private-storage")
    logs = tmp_path_factory.mktemp("private-logs")
    name = f"private-{uuid.uuid4().hex[:8]}"
    redis_url = redis_server.isolated_url()
    ingest_port, edge_ports = free_port(), [free_port(), free_port()]
    env = {
        "PINHOLE_STORAGE": f"file://{root}",
        "PINHOLE_QUEUE": tansu.url,
        "PINHOLE_CACHE": redis_url,
        "PINHOLE_PUBLIC_URL": f"http://127.0.0.1:{edge_ports[0]}",
        "PINHOLE_INGEST_URL": f"http://127.0.0.1:{ingest_port}",
        "PINHOLE_AUTH__TOKEN_SHA256": json.dumps([token_digest(TOKEN)]),
        "PINHOLE_EDGE__SIGNING_KEYS": json.dumps([KEY]),
        "PINHOLE_EDGE__VISIBILITY_TTL_SECONDS": str(TTL_SECONDS),
        "PINHOLE_UPLOAD_URLS__SIGNING_KEYS": json.dumps([UPLOAD_URL_KEY]),
        "PINHOLE_KAFKA__JOBS_TOPIC": f"{name}.jobs",
        "PINHOLE_KAFKA__EVENTS_TOPIC": f"{name}.events",
        "PINHOLE_KAFKA__DEAD_LETTER_TOPIC": f"{name}.dlq",
        "PINHOLE_KAFKA__CONSUMER_GROUP": name,
        "PINHOLE_KAFKA__PARTITIONS": "2",
        # Upload by URL from this test's own server.
        "PINHOLE_URL_FETCH__ALLOW_LOOPBACK": "true",
    }
    started: list[PinholeProcess] = []
    try:
        ingest = start_pinhole("ingest", env, logs, port=ingest_port)
        started.append(ingest)
        for port in edge_ports:
            started.append(start_pinhole("serve", env, logs, port=port))
        yield Roles(root, ingest, started[1:], redis_url)
    finally:
        for process in started:
            process.stop()


@pytest.fixture
async def listening(roles: Roles) -> Roles:
    for edge in roles.edges:
        await wait_for_log(edge, "edge listening for deletes")
    return roles


async def _seed(roles: Roles, n: int) -> ImageId:
    """A ready image of distinct small bytes (its ladder rendered on the fly)."""
    data = pyvips.Image.black(300 + n, 200).write_to_buffer(".jpg")
    store = build_blob_store(f"file://{roles.root}")
    try:
        return await seed_image(store, Photo(f"private-{n}", data, 300 + n, 200, False))
    finally:
        await store.close()


def _path(image_id: str, ext: str = ".jpg") -> str:
    return f"/{PRESET.name}/{image_id[0:2]}/{image_id[2:4]}/{image_id[4:6]}/{image_id}{ext}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def code(self) -> str:
        error: str = json.loads(self.body)["error"]["code"]
        return error


async def _get(session: aiohttp.ClientSession, url: str, **headers: str) -> Answer:
    async with session.get(url, headers=headers) as resp:
        return Answer(resp.status, dict(resp.headers), await resp.read())


async def _record(
    session: aiohttp.ClientSession, roles: Roles, owner: str, image_id: str, **fields: Any
) -> dict[str, Any]:
    async with session.post(
        f"{roles.ingest.url}/v1/records",
        json={"owner": owner, "image_id": image_id, **fields},
        headers=AUTH,
    ) as resp:
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def _patch(
    session: aiohttp.ClientSession, roles: Roles, record_id: str, **fields: Any
) -> dict[str, Any]:
    async with session.patch(
        f"{roles.ingest.url}/v1/records/{record_id}", json=fields, headers=AUTH
    ) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def _until(
    session: aiohttp.ClientSession, url: str, status: int, within: float = WITHIN_SECONDS
) -> Answer:
    deadline = time.monotonic() + within
    while True:
        answer = await _get(session, url)
        if answer.status == status or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.1)


async def _redis_keys(roles: Roles, image_id: str) -> list[bytes]:
    client = aioredis.Redis.from_url(roles.redis_url)
    try:
        return [key async for key in client.scan_iter(match=f"*{image_id}*")]
    finally:
        await client.aclose()


def _max_age(control: str) -> int:
    match = re.fullmatch(r"private, max-age=(\d+)", control)
    assert match is not None, control
    return int(match.group(1))


async def test_a_private_image_is_served_only_for_a_valid_expiring_signature(
    roles: Roles, session: aiohttp.ClientSession
) -> None:
    image_id = await _seed(roles, 1)
    record = await _record(session, roles, "alice", image_id, private=True)
    assert record["private"] is True
    expires_at = record["urls_expire_at"]
    assert time.time() + 3600 <= expires_at <= time.time() + 3600 * 1.1 + 1
    signed = record["image"]["urls"][PRESET.name]
    assert signed.startswith(f"{roles.edges[0].url}/s/")
    assert f"/e{expires_at}{_path(image_id, '')}" in signed

    for edge in roles.edges:
        # The unsigned URL, and a non-expiring signed size: refused with the code.
        for url in (
            edge.url + _path(image_id),
            edge.url + _path(image_id, ""),
            edge.url + sign_path(KEY, signed_tail(64, 64, "fit", image_id)),
        ):
            refused = await _get(session, url)
            assert (refused.status, refused.code()) == (403, "image-private"), url
            assert refused.headers["Cache-Control"] == cache_policy.ERROR
        # The handed-out URL works on every edge (one key), negotiated, privately.
        served = await _get(session, signed.replace(roles.edges[0].url, edge.url), Accept="*/*")
        assert served.status == 200
        assert served.headers["Content-Type"] == "image/jpeg"
        assert served.headers["Vary"] == "Accept"
        assert 0 < _max_age(served.headers["Cache-Control"]) <= expires_at - time.time() + 1
        assert pyvips.Image.new_from_buffer(served.body, "").width == 236
        # An expiring signed size of the private image: rendered, privately.
        sized = edge.url + sign_path(
            KEY, signed_tail(64, 64, "fit", image_id, Format.WEBP, int(time.time()) + 600)
        )
        got = await _get(session, sized)
        assert got.status == 200
        assert 590 <= _max_age(got.headers["Cache-Control"]) <= 600

    # An explicit format by its signed URL, from storage the second time.
    url = signed_ladder_url(roles.edges[0].url, KEY, PRESET, image_id, Format.JPEG, expires_at)
    first, second = await _get(session, url), await _get(session, url)
    assert (first.status, second.status) == (200, 200)
    assert first.body == second.body
    # No tier under a public key holds any of it: not the ladder, not the sizes.
    assert await _redis_keys(roles, image_id) == []

    # A changed signature, and an expired URL beyond the skew allowance.
    sig = url.split("/")[4]
    tampered = url.replace(sig, ("A" if sig[0] != "A" else "B") + sig[1:])
    bad = await _get(session, tampered)
    assert (bad.status, bad.code()) == (403, "bad-signature")
    old = signed_ladder_url(
        roles.edges[0].url, KEY, PRESET, image_id, Format.JPEG, int(time.time()) - 3600
    )
    expired = await _get(session, old)
    assert (expired.status, expired.code()) == (403, "signature-expired")


async def test_the_manifest_signs_a_private_image_s_urls_for_the_token_only(
    roles: Roles, session: aiohttp.ClientSession
) -> None:
    image_id = await _seed(roles, 2)
    await _record(session, roles, "alice", image_id, private=True)
    status_url = f"{roles.ingest.url}/v1/images/{image_id}"
    async with session.get(status_url) as resp:
        anonymous = await resp.json()
    assert anonymous["private"] is True
    assert anonymous["urls"][PRESET.name] == roles.edges[0].url + _path(image_id, "")
    async with session.get(status_url, headers=AUTH) as resp:
        trusted = await resp.json()
    assert trusted["private"] is True
    jpeg = next(
        v for v in trusted["variants"] if v["preset"] == PRESET.name and v["format"] == "jpeg"
    )
    assert jpeg["url"].startswith(f"{roles.edges[0].url}/s/")
    assert jpeg["url"] in trusted["srcset"]["jpeg"]
    served = await _get(session, jpeg["url"])
    assert served.status == 200
    assert served.headers["Cache-Control"].startswith("private, max-age=")


async def test_a_public_image_is_served_exactly_as_before(
    roles: Roles, session: aiohttp.ClientSession
) -> None:
    with_record = await _seed(roles, 3)
    await _record(session, roles, "alice", with_record)
    without = await _seed(roles, 4)
    for image_id in (with_record, without):
        served = await _get(session, roles.edges[0].url + _path(image_id))
        assert served.status == 200
        assert served.headers["Cache-Control"] == cache_policy.IMMUTABLE
        assert served.headers["Surrogate-Key"] == f"img-{image_id}"
        # Through the hot cache as ever.
        assert [k for k in await _redis_keys(roles, image_id) if b"variants/" in k]
        async with session.get(f"{roles.ingest.url}/v1/images/{image_id}") as resp:
            view = await resp.json()
        assert "private" not in view
        assert view["urls"][PRESET.name] == roles.edges[0].url + _path(image_id, "")


async def test_going_private_and_back_reaches_every_edge_by_the_event(
    listening: Roles, session: aiohttp.ClientSession
) -> None:
    roles = listening
    image_id = await _seed(roles, 5)
    record = await _record(session, roles, "alice", image_id)
    urls = [edge.url + _path(image_id) for edge in roles.edges]
    for url in urls:
        # Twice: the second from the edge's L1, its visibility known for 60 s.
        assert (await _get(session, url)).status == 200
        assert (await _get(session, url)).status == 200
    assert await _redis_keys(roles, image_id)

    changed_at = time.monotonic()
    await _patch(session, roles, record["id"], private=True)
    for url in urls:
        refused = await _until(session, url, 403)
        assert (refused.status, refused.code()) == (403, "image-private"), url
    assert time.monotonic() - changed_at < TTL_SECONDS / 2
    # Every edge dropped the bytes it had cached under the public keys.
    deadline = time.monotonic() + WITHIN_SECONDS
    while True:
        left = await _redis_keys(roles, image_id)
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert left == []

    changed_at = time.monotonic()
    back = await _patch(session, roles, record["id"], private=False)
    assert back["image"]["urls"][PRESET.name] == roles.edges[0].url + _path(image_id, "")
    for url in urls:
        served = await _until(session, url, 200)
        assert served.status == 200, url
        assert served.headers["Cache-Control"] == cache_policy.IMMUTABLE
    assert time.monotonic() - changed_at < TTL_SECONDS / 2


async def test_a_public_record_of_the_same_bytes_makes_the_image_public(
    listening: Roles, session: aiohttp.ClientSession
) -> None:
    """What private cannot protect: the image is the bytes, shared by everyone
    who has them. Alice's record is private; once Bob holds a public record of
    the same bytes, the unsigned URL serves them to anyone, until it goes."""
    roles = listening
    image_id = await _seed(roles, 6)
    alice = await _record(session, roles, "alice", image_id, private=True)
    url = roles.edges[1].url + _path(image_id)
    assert (await _get(session, url)).status == 403

    bob = await _record(session, roles, "bob", image_id)
    public = await _until(session, url, 200)
    assert public.status == 200
    assert public.headers["Cache-Control"] == cache_policy.IMMUTABLE
    async with session.get(f"{roles.ingest.url}/v1/images/{image_id}") as resp:
        assert "private" not in await resp.json()
    # Alice's record still hands out signed URLs, and they still work.
    async with session.get(f"{roles.ingest.url}/v1/records/{alice['id']}", headers=AUTH) as resp:
        signed = (await resp.json())["image"]["urls"][PRESET.name]
    served = await _get(session, signed, Accept="*/*")
    assert served.status == 200
    assert served.headers["Cache-Control"].startswith("private, max-age=")

    # Bob's public record goes: the image is private again, at every edge.
    async with session.delete(f"{roles.ingest.url}/v1/records/{bob['id']}", headers=AUTH) as resp:
        assert resp.status == 204
    for edge in roles.edges:
        refused = await _until(session, edge.url + _path(image_id), 403)
        assert (refused.status, refused.code()) == (403, "image-private")


async def test_an_upload_can_make_a_private_record(
    roles: Roles, session: aiohttp.ClientSession
) -> None:
    data = pyvips.Image.black(333, 222).write_to_buffer(".jpg")
    async with session.post(
        f"{roles.ingest.url}/v1/images",
        data=data,
        params={"owner": "carol", "private": "true"},
        headers={**AUTH, "Content-Type": "image/jpeg"},
    ) as resp:
        assert resp.status == 202, await resp.text()
        body = await resp.json()
    assert body["record"]["private"] is True
    assert body["urls"][PRESET.name].startswith(f"{roles.edges[0].url}/s/")
    assert body["record"]["image"]["urls"][PRESET.name].startswith(f"{roles.edges[0].url}/s/")
    refused = await _get(session, roles.edges[0].url + _path(body["id"]))
    assert (refused.status, refused.code()) == (403, "image-private")
    async with session.post(
        f"{roles.ingest.url}/v1/images",
        data=data,
        params={"owner": "carol", "private": "yes"},
        headers={**AUTH, "Content-Type": "image/jpeg"},
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "bad-request"
    async with session.patch(
        f"{roles.ingest.url}/v1/records/{body['record']['id']}",
        json={"private": "no"},
        headers=AUTH,
    ) as resp:
        assert resp.status == 400


async def test_a_one_time_upload_url_can_make_a_private_record(
    roles: Roles, session: aiohttp.ClientSession
) -> None:
    """The browser's upload is private from its first moment: the URL says so,
    inside its signed claims, and the record it makes is private."""
    async with session.post(
        f"{roles.ingest.url}/v1/upload-urls",
        json={"owner": "fay", "private": True},
        headers=AUTH,
    ) as resp:
        assert resp.status == 201, await resp.text()
        made = await resp.json()
    assert made["private"] is True
    path = made["url"][made["url"].index("/v1/uploads/") :]
    data = pyvips.Image.black(355, 211).write_to_buffer(".jpg")
    async with session.post(
        roles.ingest.url + path, data=data, headers={"Content-Type": "image/jpeg"}
    ) as resp:
        assert resp.status == 202, await resp.text()
        body = await resp.json()
    assert body["record"]["private"] is True
    assert body["urls"][PRESET.name].startswith(f"{roles.edges[0].url}/s/")
    refused = await _get(session, roles.edges[0].url + _path(body["id"]))
    assert (refused.status, refused.code()) == (403, "image-private")
    # The handed-out URL's signature is taken: the image is only not rendered yet
    # (no transcoder runs here), where the unsigned one is refused as private.
    signed = await _get(session, body["urls"][PRESET.name])
    assert (signed.status, signed.code()) == (404, "image-pending")

    # A public URL's record is public, and "private" takes only true or false.
    async with session.post(
        f"{roles.ingest.url}/v1/upload-urls", json={"owner": "fay"}, headers=AUTH
    ) as resp:
        assert (await resp.json())["private"] is False
    async with session.post(
        f"{roles.ingest.url}/v1/upload-urls",
        json={"owner": "fay", "private": "yes"},
        headers=AUTH,
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "bad-request"


async def test_the_alias_of_a_private_record_is_refused_without_naming_the_image(
    roles: Roles, session: aiohttp.ClientSession
) -> None:
    data = pyvips.Image.black(366, 222).write_to_buffer(".jpg")
    async with session.post(
        f"{roles.ingest.url}/v1/images",
        data=data,
        params={"owner": "gus", "alias": "secret", "private": "true"},
        headers={**AUTH, "Content-Type": "image/jpeg"},
    ) as resp:
        assert resp.status == 202, await resp.text()
        body = await resp.json()
    alias_url = f"{roles.edges[0].url}/a/gus/secret/236x"
    async with session.get(alias_url, allow_redirects=False) as resp:
        text = await resp.text()
        assert resp.status == 403, text
        assert json.loads(text)["error"]["code"] == "image-private"
        assert "Location" not in resp.headers
        assert resp.headers["Cache-Control"] == cache_policy.ERROR
        assert body["id"] not in text
    await _patch(session, roles, body["record"]["id"], private=False)
    async with session.get(alias_url, allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"].endswith(f"/{body['id']}")


async def test_an_image_whose_last_record_went_is_not_served_unsigned(
    listening: Roles, session: aiohttp.ClientSession
) -> None:
    """No record left means public only for an image that never had one: one
    whose records all went waits for the sweep, and is not served unsigned (a
    private image's last record going must not make it public for the grace
    period)."""
    roles = listening
    private_id, public_id = await _seed(roles, 7), await _seed(roles, 8)
    private = await _record(session, roles, "alice", private_id, private=True)
    public = await _record(session, roles, "alice", public_id)
    for image_id in (private_id, public_id):
        await _get(session, roles.edges[0].url + _path(image_id))  # known to the edge now
    for record in (private, public):
        async with session.delete(
            f"{roles.ingest.url}/v1/records/{record['id']}", headers=AUTH
        ) as resp:
            assert resp.status == 204
    for image_id in (private_id, public_id):
        for edge in roles.edges:
            refused = await _until(session, edge.url + _path(image_id), 403)
            assert (refused.status, refused.code()) == (403, "image-private")
    # A new public record takes it back from the sweep, and the edges hear it.
    await _record(session, roles, "bob", public_id)
    served = await _until(session, roles.edges[1].url + _path(public_id), 200)
    assert served.status == 200


async def test_an_upload_by_url_can_make_a_private_record(
    roles: Roles, session: aiohttp.ClientSession
) -> None:
    data = pyvips.Image.black(344, 233).write_to_buffer(".jpg")

    async def photo(_request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/photo.jpg", photo)
    async with TestServer(app, host="127.0.0.1") as server:
        async with session.post(
            f"{roles.ingest.url}/v1/images",
            json={"url": str(server.make_url("/photo.jpg")), "owner": "dora", "private": True},
            headers=AUTH,
        ) as resp:
            assert resp.status == 202, await resp.text()
            body = await resp.json()
        async with session.post(
            f"{roles.ingest.url}/v1/images",
            json={"url": str(server.make_url("/photo.jpg")), "owner": "dora", "private": 1},
            headers=AUTH,
        ) as resp:
            assert resp.status == 400
    assert body["record"]["private"] is True
    assert body["urls"][PRESET.name].startswith(f"{roles.edges[0].url}/s/")
    refused = await _get(session, roles.edges[0].url + _path(body["id"]))
    assert (refused.status, refused.code()) == (403, "image-private")


async def test_pinhole_up_honours_a_change_of_visibility_at_once(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """`pinhole up` (ingest and edge in one process, in-process queue): the edge
    hears image.visibility on that queue, not only at the end of its TTL."""
    root = tmp_path / "storage"
    env = {
        "PINHOLE_STORAGE": f"file://{root}",
        "PINHOLE_AUTH__TOKEN_SHA256": json.dumps([token_digest(TOKEN)]),
        "PINHOLE_EDGE__SIGNING_KEYS": json.dumps([KEY]),
        "PINHOLE_EDGE__VISIBILITY_TTL_SECONDS": str(TTL_SECONDS),
    }
    up = start_pinhole("up", env, tmp_path)
    try:
        store = build_blob_store(f"file://{root}")
        try:
            data = pyvips.Image.black(311, 200).write_to_buffer(".jpg")
            image_id = await seed_image(store, Photo("up", data, 311, 200, False))
        finally:
            await store.close()
        await wait_for_log(up, "edge listening for deletes")
        async with session.post(
            f"{up.url}/v1/records", json={"owner": "erin", "image_id": image_id}, headers=AUTH
        ) as resp:
            assert resp.status == 201, await resp.text()
            record = await resp.json()
        url = up.url + _path(image_id)
        assert (await _get(session, url)).status == 200
        changed_at = time.monotonic()
        async with session.patch(
            f"{up.url}/v1/records/{record['id']}", json={"private": True}, headers=AUTH
        ) as resp:
            assert resp.status == 200, await resp.text()
        refused = await _until(session, url, 403)
        assert (refused.status, refused.code()) == (403, "image-private")
        assert time.monotonic() - changed_at < TTL_SECONDS / 2
    finally:
        up.stop()
