"""Storage quotas per owner, ``GET /v1/owners/{owner}/usage`` and the rate limits
on the record API's writes, over HTTP.

Real parts: the ingest app served by Pinhole's own runner, a local-disk store,
and the record store on SQLite or sharded over two real MariaDB servers (the
harness's fixtures); the in-process queue stands in for Kafka and the
in-process rate limiter for Redis (the transcoder and Redis are not under test
here: ``tests/e2e/test_rate_limits_cross_process.py`` holds the limiter across
processes on Redis). ``test_quotas_cross_process.py`` races uploads of one
owner through two ``pinhole ingest`` processes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips
from aiohttp import web
from prometheus_client import REGISTRY

from ingest.auth import token_digest
from pinhole.cache.rate_limit import MemoryRateLimiter
from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.keys import original_key, sweep_key
from pinhole.domain.quota import Quota, Usage
from pinhole.domain.record import owner_shard
from pinhole.errors import QuotaExceeded
from pinhole.ports import BlobStore, RecordStore
from pinhole.queue.memory import MemoryJobQueue
from pinhole.rate_limits import RATE_LIMITS_KEY, RateLimitGate
from pinhole.records.sql import mirroring, shard_ids
from pinhole.settings import Auth, OwnerQuota, Quotas, RateLimits, Records, Settings, UploadUrls
from storage.fs import FsBlobStore
from tests.support.apps import serving_ingest
from tests.support.mariadb import MariaDbServer
from tests.support.records import mariadb_store, owner_on, record_store

TOKEN = "quota-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JPEG = {**AUTH, "Content-Type": "image/jpeg"}
WRITES_PER_TOKEN = 6


# Owners on both shard servers; FULL has a quota of its own (an override).
ALICE = owner_on(True, "alice")
BOB = owner_on(False, "bob")
ROOMY = owner_on(False, "roomy")
FREE = owner_on(True, "free")
MAX_IMAGES = 3

_sizes = iter(range(16, 4000))


def jpeg(width: int | None = None) -> bytes:
    """A fresh small JPEG (a new image id) each call."""
    data: bytes = pyvips.Image.black(width or next(_sizes), 12).write_to_buffer(".jpg")
    return data


def big_jpeg() -> bytes:
    """A JPEG of some kilobytes (noise does not compress)."""
    noise = pyvips.Image.gaussnoise(200 + next(_sizes), 200, sigma=60, mean=128).cast("uchar")
    data: bytes = noise.write_to_buffer(".jpg", Q=95)
    return data


@dataclass
class Api:
    base: str
    store: BlobStore
    records: RecordStore
    settings: Settings

    def url(self, path: str) -> str:
        return self.base + path


def _settings(byte_quota: int) -> Settings:
    return Settings(
        auth=Auth(token_sha256=[token_digest(TOKEN)]),
        record_api=Records(sweep_grace_seconds=5, sweep_interval_seconds=3600),
        upload_urls=UploadUrls(signing_keys=["quota-test-signing-key"]),
        quotas=Quotas(
            default=OwnerQuota(max_images=MAX_IMAGES, max_bytes=byte_quota),
            owners={ROOMY: OwnerQuota(max_images=100), FREE: OwnerQuota()},
        ),
        rate_limits=RateLimits(record_writes_per_token=WRITES_PER_TOKEN),
    )


# The default byte quota: room for a few small JPEGs (~300-700 bytes each),
# never for one ``big_jpeg``.
BYTE_QUOTA = 4000


@pytest.fixture(params=["sqlite", "sharded-mariadb"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    kind = "sharded" if request.param == "sharded-mariadb" else request.param
    records = await record_store(kind, request, tmp_path, timeout_seconds=2.0)
    settings = _settings(BYTE_QUOTA)
    store = FsBlobStore(tmp_path / "blobs")

    def gate(app: web.Application) -> None:
        app[RATE_LIMITS_KEY] = RateLimitGate(MemoryRateLimiter(), settings.rate_limits)

    async with serving_ingest(settings, store, MemoryJobQueue(), records, prepare=gate) as (
        base,
        _,
    ):
        yield Api(base, store, records, settings)


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    async with session.request(method, url, headers=headers or AUTH, **kwargs) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


async def upload(
    session: aiohttp.ClientSession, api: Api, body: bytes, owner: str
) -> tuple[int, Any]:
    return await call(
        session, "POST", api.url("/v1/images"), headers=JPEG, data=body, params={"owner": owner}
    )


async def usage(session: aiohttp.ClientSession, api: Api, owner: str) -> dict[str, Any]:
    status, body = await call(session, "GET", api.url(f"/v1/owners/{owner}/usage"))
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def code(body: Any) -> str:
    return str(body["error"]["code"])


def refusals(quota: str, stage: str) -> float:
    value = REGISTRY.get_sample_value(
        "pinhole_quota_refusals_total", {"quota": quota, "stage": stage}
    )
    return value or 0.0


async def test_usage_counts_images_and_bytes_and_the_images_quota_refuses_the_next(
    api: Api, session: aiohttp.ClientSession
) -> None:
    bodies = [jpeg() for _ in range(MAX_IMAGES)]
    made = []
    for body in bodies:
        status, answer = await upload(session, api, body, ALICE)
        assert status == 202, answer
        made.append(answer["record"]["id"])
    seen = await usage(session, api, ALICE)
    assert seen == {
        "owner": ALICE,
        "usage": {"bytes": sum(map(len, bodies)), "images": MAX_IMAGES},
        "quota": {"max_bytes": BYTE_QUOTA, "max_images": MAX_IMAGES},
        "remaining": {"bytes": BYTE_QUOTA - sum(map(len, bodies)), "images": 0},
    }

    before = refusals("images", "declared")
    extra = jpeg()
    status, answer = await upload(session, api, extra, ALICE)
    assert (status, code(answer)) == (403, "quota-exceeded"), answer
    assert f"{MAX_IMAGES} of its {MAX_IMAGES} images" in answer["error"]["message"]
    assert refusals("images", "declared") == before + 1
    # Refused from its headers: nothing of it was stored.
    assert await api.store.head(original_key(image_id_for_bytes(extra))) is None
    # The usage endpoint needs the token, like the rest of the record API.
    status, _ = await call(
        session, "GET", api.url(f"/v1/owners/{ALICE}/usage"), headers={"Accept": "*/*"}
    )
    assert status == 401

    # A deleted record frees its share at once.
    status, _ = await call(session, "DELETE", api.url(f"/v1/records/{made[0]}"))
    assert status == 204
    assert (await usage(session, api, ALICE))["usage"]["images"] == MAX_IMAGES - 1
    status, answer = await upload(session, api, extra, ALICE)
    assert status == 202, answer


async def test_a_declared_length_over_the_quota_is_refused_before_100_continue(
    api: Api,
) -> None:
    """The client sends only headers and waits: it is answered 403 without ever
    being asked for the body."""
    host, port = api.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            (
                f"POST /v1/images?owner={BOB} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {BYTE_QUOTA + 1}\r\nExpect: 100-continue\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 403"), head
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = json.loads(await asyncio.wait_for(reader.readexactly(length), 10))
        assert code(body) == "quota-exceeded"
        assert "does not fit" in body["error"]["message"]
    finally:
        writer.close()


async def test_a_body_that_declares_nothing_is_held_to_its_real_size_before_it_is_stored(
    api: Api, session: aiohttp.ClientSession
) -> None:
    """A chunked body (no Content-Length) and a multipart form pass the header
    check; their real size is over the quota, and they are refused before
    anything of them is stored."""
    body = big_jpeg()
    assert len(body) > BYTE_QUOTA

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    before = refusals("bytes", "received")
    status, answer = await call(
        session,
        "POST",
        api.url("/v1/images"),
        headers=JPEG,
        data=chunks(),
        params={"owner": BOB},
    )
    assert (status, code(answer)) == (403, "quota-exceeded"), answer

    form = aiohttp.FormData()
    form.add_field("owner", BOB)
    form.add_field("file", body, content_type="image/jpeg", filename="big.jpg")
    status, answer = await call(session, "POST", api.url("/v1/images"), data=form)
    assert (status, code(answer)) == (403, "quota-exceeded"), answer
    assert refusals("bytes", "received") == before + 2
    assert await api.store.head(original_key(image_id_for_bytes(body))) is None
    assert (await usage(session, api, BOB))["usage"] == {"bytes": 0, "images": 0}

    # An owner whose override sets no byte limit takes it.
    status, answer = await upload(session, api, body, ROOMY)
    assert status == 202, answer
    seen = await usage(session, api, ROOMY)
    assert seen["usage"] == {"bytes": len(body), "images": 1}
    assert seen["quota"] == {"max_bytes": None, "max_images": 100}
    assert seen["remaining"] == {"bytes": None, "images": 99}


async def test_shared_bytes_count_in_full_for_each_owner_that_holds_them(
    api: Api, session: aiohttp.ClientSession
) -> None:
    body = jpeg()
    status, first = await upload(session, api, body, ALICE)
    assert status == 202, first
    status, second = await upload(session, api, body, BOB)
    assert status in (200, 202), second
    assert first["id"] == second["id"]  # one image, stored once
    for owner in (ALICE, BOB):
        assert (await usage(session, api, owner))["usage"] == {"bytes": len(body), "images": 1}
    # Bob's delete changes nothing of Alice's.
    status, _ = await call(session, "DELETE", api.url(f"/v1/records/{second['record']['id']}"))
    assert status == 204
    assert (await usage(session, api, BOB))["usage"] == {"bytes": 0, "images": 0}
    assert (await usage(session, api, ALICE))["usage"] == {"bytes": len(body), "images": 1}


async def test_a_record_of_a_stored_image_is_held_to_the_quota_at_commit(
    api: Api, session: aiohttp.ClientSession
) -> None:
    """``POST /v1/records`` stores nothing: the store's own check refuses it, and
    the record is not made. Its image's original size is what it counts."""
    body = big_jpeg()
    status, answer = await upload(session, api, body, ROOMY)
    assert status == 202, answer
    before = refusals("bytes", "commit")
    status, refused = await call(
        session, "POST", api.url("/v1/records"), json={"owner": ALICE, "image_id": answer["id"]}
    )
    assert (status, code(refused)) == (403, "quota-exceeded"), refused
    assert refusals("bytes", "commit") == before + 1
    assert (await usage(session, api, ALICE))["usage"] == {"bytes": 0, "images": 0}
    # An owner with no quota gets it, and its usage counts the original's size.
    status, made = await call(
        session, "POST", api.url("/v1/records"), json={"owner": FREE, "image_id": answer["id"]}
    )
    assert status == 201, made
    assert (await usage(session, api, FREE))["usage"] == {"bytes": len(body), "images": 1}


async def test_the_store_checks_the_quota_and_creates_in_one_transaction(api: Api) -> None:
    """Stage 3 alone, as racing processes reach it: of concurrent creates with a
    quota, exactly as many as fit are made, whatever each saw before."""
    full = Quota(max_images=2, max_bytes=25)
    image = image_id_for_bytes(jpeg())
    results = await asyncio.gather(
        *(api.records.create(BOB, image, size_bytes=10, quota=full) for _ in range(6)),
        return_exceptions=True,
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(made) == 2, results
    assert all(getattr(r, "code", None) == "quota-exceeded" for r in refused), refused
    assert await api.records.usage(BOB) == Usage(images=2, bytes=20)
    # The bytes: 20 of 25 used, a record of 6 bytes does not fit, one of 5 does.
    roomy = Quota(max_bytes=25)
    with pytest.raises(QuotaExceeded) as info:
        await api.records.create(BOB, image, size_bytes=6, quota=roomy)
    assert info.value.kind == "bytes"
    await api.records.create(BOB, image, size_bytes=5, quota=roomy)
    assert await api.records.usage(BOB) == Usage(images=3, bytes=25)


async def test_an_upload_url_is_refused_to_an_owner_with_no_room_and_held_when_used(
    api: Api, session: aiohttp.ClientSession
) -> None:
    status, made = await call(
        session, "POST", api.url("/v1/upload-urls"), json={"owner": BOB, "expires_in": 600}
    )
    assert status == 201, made
    # The URL was made while Bob had room; he fills his quota meanwhile.
    for _ in range(MAX_IMAGES):
        status, answer = await upload(session, api, jpeg(), BOB)
        assert status == 202, answer
    status, refused = await call(
        session, "POST", api.url("/v1/upload-urls"), json={"owner": BOB, "expires_in": 600}
    )
    assert (status, code(refused)) == (403, "quota-exceeded"), refused
    body = jpeg()
    path = "/" + made["url"].split("/", 3)[3]  # the URL names the configured ingest_url
    status, used = await call(
        session, "POST", api.url(path), headers={"Content-Type": "image/jpeg"}, data=body
    )
    assert (status, code(used)) == (403, "quota-exceeded"), used
    assert await api.store.head(original_key(image_id_for_bytes(body))) is None


async def test_record_writes_are_rate_limited_per_token_and_reads_are_not(
    api: Api, session: aiohttp.ClientSession
) -> None:
    status, answer = await upload(session, api, jpeg(), FREE)
    assert status == 202, answer
    record_id = answer["record"]["id"]
    seen = []
    for n in range(WRITES_PER_TOKEN):
        async with session.patch(
            api.url(f"/v1/records/{record_id}"), json={"metadata": {"n": n}}, headers=AUTH
        ) as resp:
            assert resp.status == 200, await resp.text()
            seen.append(resp.headers["RateLimit"])
    assert '"record-writes-per-token";r=0;' in seen[-1], seen
    assert '"record-writes-per-owner";' in seen[-1], seen  # the record's owner counted too
    async with session.patch(
        api.url(f"/v1/records/{record_id}"), json={"metadata": {"n": -1}}, headers=AUTH
    ) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert code(await resp.json()) == "rate-limit-exceeded"
    for path in (
        f"/v1/records/{record_id}",
        f"/v1/owners/{FREE}/images",
        f"/v1/owners/{FREE}/usage",
    ):
        status, _ = await call(session, "GET", api.url(path))
        assert status == 200, path
    status, refused = await call(
        session, "POST", api.url("/v1/records"), json={"owner": FREE, "image_id": answer["id"]}
    )
    assert (status, code(refused)) == (429, "rate-limit-exceeded")
    # The write was not made.
    status, record = await call(session, "GET", api.url(f"/v1/records/{record_id}"))
    assert record["metadata"] == {"n": WRITES_PER_TOKEN - 1}


async def test_a_refused_fresh_image_is_marked_for_the_sweep(
    api: Api, session: aiohttp.ClientSession
) -> None:
    """Fill Alice to one image short, then race two uploads of new images past the
    header checks: one record is made, the other is refused at commit and its
    original, stored for it alone, is marked for the sweep."""
    for _ in range(MAX_IMAGES - 1):
        status, answer = await upload(session, api, jpeg(), ALICE)
        assert status == 202, answer
    before = refusals("images", "commit") + refusals("images", "received")
    bodies = [jpeg(), jpeg()]
    answers = await asyncio.gather(*(upload(session, api, b, ALICE) for b in bodies))
    statuses = sorted(status for status, _ in answers)
    # Both passed the header checks; exactly one record fits.
    assert statuses == [202, 403], answers
    refused_body = next(b for b, (s, _) in zip(bodies, answers, strict=True) if s == 403)
    assert refusals("images", "commit") + refusals("images", "received") == before + 1
    refused_id = image_id_for_bytes(refused_body)
    stored = await api.store.head(original_key(refused_id))
    if stored is not None:  # refused at commit: it was stored, and must be swept
        assert await api.store.head(sweep_key(refused_id)) is not None
    assert (await usage(session, api, ALICE))["usage"]["images"] == MAX_IMAGES


async def test_a_shard_move_carries_each_records_bytes(
    mariadb: MariaDbServer, mariadb_b: MariaDbServer
) -> None:
    """Usage is a sum over rows, so a move (``pinhole db migrate``: the copy, and
    the writes mirrored during it) carries it with the rows themselves."""
    source = await mariadb_store(mariadb, "default", timeout_seconds=2.0)
    target = await mariadb_store(mariadb_b, "b", timeout_seconds=2.0)
    try:
        await source.ensure_control_tables()
        await source.create(ALICE, image_id_for_bytes(jpeg()), size_bytes=123)
        shard = owner_shard(ALICE)
        low, high = shard_ids(shard, shard)
        await source.copy_range(target, low - 1, high, 100)
        assert await target.usage(ALICE) == Usage(images=1, bytes=123)
        with mirroring(target):
            await source.create(ALICE, image_id_for_bytes(jpeg()), size_bytes=7)
        assert await target.usage(ALICE) == Usage(images=2, bytes=130)
        assert await source.usage(ALICE) == await target.usage(ALICE)
    finally:
        await source.close()
        await target.close()
