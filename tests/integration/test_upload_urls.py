"""One-time upload URLs over HTTP: made with the bearer token, used once with none.

Real parts: the ingest app served by Pinhole's own runner, a local-disk store
(where the claims live), SQLite records; the in-process queue stands in for
Kafka. Two ingest processes sharing S3 are in tests/faults/test_upload_url_race.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips
from prometheus_client import REGISTRY

from ingest.auth import token_digest
from ingest.upload_urls import Claims, sign, sweep_claims
from pinhole.domain.keys import UPLOAD_CLAIMS_PREFIX
from pinhole.ports import BlobStore
from pinhole.queue.memory import MemoryJobQueue
from pinhole.records.sqlite import SqliteRecordStore
from pinhole.settings import Auth, Limits, Settings, UploadUrls
from storage.fs import FsBlobStore
from tests.support.apps import serving_ingest

TOKEN = "upload-url-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY = "upload-url-test-key"
APP_ORIGIN = "http://app.test:3000"
LIMIT = 200_000


def jpeg(n: int) -> bytes:
    data: bytes = pyvips.Image.black(16 + n, 12).write_to_buffer(".jpg")
    return data


def png(n: int) -> bytes:
    data: bytes = pyvips.Image.black(16 + n, 12).write_to_buffer(".png")
    return data


@dataclass
class Api:
    base: str
    store: BlobStore
    settings: Settings

    def url(self, path: str) -> str:
        return self.base + path


@asynccontextmanager
async def serving(tmp_path: Path, *, keys: list[str] | None = None) -> AsyncIterator[Api]:
    settings = Settings(
        auth=Auth(token_sha256=[token_digest(TOKEN)]),
        limits=Limits(max_upload_bytes=LIMIT),
        upload_urls=UploadUrls(
            signing_keys=[KEY] if keys is None else keys, cors_origins=[APP_ORIGIN]
        ),
    )
    store = FsBlobStore(tmp_path / "blobs")
    records = SqliteRecordStore(tmp_path / "records.db", timeout_seconds=5.0)
    async with serving_ingest(settings, store, MemoryJobQueue(), records) as (base, _):
        yield Api(base, store, settings)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(tmp_path) as running:
        yield running


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, dict[str, str]]:
    async with session.request(method, url, headers=headers, **kwargs) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None, dict(resp.headers)


async def new_url(session: aiohttp.ClientSession, api: Api, **body: Any) -> dict[str, Any]:
    status, answer, _ = await call(
        session, "POST", api.url("/v1/upload-urls"), headers=AUTH, json={"owner": "alice", **body}
    )
    assert status == 201, answer
    return dict(answer)


def to_local(api: Api, url: str) -> str:
    """The URL's path on the test server (the answer names ``ingest_url``'s host)."""
    return api.url(url[url.index("/v1/uploads/") :])


async def use(
    session: aiohttp.ClientSession,
    api: Api,
    url: str,
    body: bytes,
    *,
    content_type: str = "image/jpeg",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    return await call(
        session,
        "POST",
        to_local(api, url),
        headers={"Content-Type": content_type, **(headers or {})},
        data=body,
    )


def code(answer: Any) -> str:
    return str(answer["error"]["code"])


def uses(result: str) -> float:
    return REGISTRY.get_sample_value("pinhole_upload_url_uses_total", {"result": result}) or 0.0


async def test_an_upload_url_takes_one_upload_with_no_other_credential(
    api: Api, session: aiohttp.ClientSession
) -> None:
    made = await new_url(session, api, metadata={"post": 7}, expires_in=600)
    assert made["owner"] == "alice"
    assert made["max_bytes"] == LIMIT
    assert made["formats"] == ["jpeg", "png", "gif", "webp", "avif", "heif"]
    assert len(made["upload_id"]) == 32
    assert made["url"].startswith(api.settings.status_base_url + "/v1/uploads/")
    expires = time.mktime(time.strptime(made["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert 590 <= expires - time.time() <= 610

    accepted_before = uses("accepted")
    status, answer, _ = await use(session, api, made["url"], jpeg(1))
    assert status == 202, answer
    assert answer["upload_id"] == made["upload_id"]
    assert answer["record"]["owner"] == "alice"
    assert answer["record"]["metadata"] == {"post": 7}
    assert uses("accepted") == accepted_before + 1
    status, got, _ = await call(
        session, "GET", api.url(f"/v1/records/{answer['record']['id']}"), headers=AUTH
    )
    assert status == 200
    assert got["image_id"] == answer["id"]

    # Used: the same bytes, other bytes, another content type: all refused.
    for body in (jpeg(1), jpeg(2)):
        status, again, _ = await use(session, api, made["url"], body)
        assert (status, code(again)) == (409, "upload-url-used")


async def test_creating_needs_the_token_and_checks_every_claim(
    api: Api, session: aiohttp.ClientSession
) -> None:
    status, answer, _ = await call(
        session, "POST", api.url("/v1/upload-urls"), json={"owner": "alice"}
    )
    assert (status, code(answer)) == (401, "unauthorized")
    for body, expected in [
        ({}, "invalid-owner"),
        ({"owner": "../x"}, "invalid-owner"),
        ({"owner": "a", "expires_in": 21_601}, "bad-request"),
        ({"owner": "a", "expires_in": 0}, "bad-request"),
        ({"owner": "a", "expires_in": "60"}, "bad-request"),
        ({"owner": "a", "max_bytes": LIMIT + 1}, "bad-request"),
        ({"owner": "a", "formats": ["svg"]}, "bad-request"),
        ({"owner": "a", "formats": []}, "bad-request"),
        ({"owner": "a", "metadata": [1]}, "invalid-metadata"),
        ({"owner": "a", "metadata": {"x": "y" * 5000}}, "invalid-metadata"),
        ({"owner": "a", "alias": "b"}, "bad-request"),
    ]:
        status, answer, _ = await call(
            session, "POST", api.url("/v1/upload-urls"), headers=AUTH, json=body
        )
        assert (status, code(answer)) == (400, expected), body
    longest = await new_url(session, api, expires_in=21_600)
    assert longest["expires_at"]


async def test_without_a_signing_key_upload_urls_are_disabled(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with serving(tmp_path, keys=[]) as api:
        status, answer, _ = await call(
            session, "POST", api.url("/v1/upload-urls"), headers=AUTH, json={"owner": "a"}
        )
        assert (status, code(answer)) == (404, "upload-urls-disabled")
        token = sign(Claims("0" * 32, "a", int(time.time()) + 60, LIMIT, ("jpeg",), None), KEY)
        status, answer, _ = await use(session, api, f"/v1/uploads/{token}", jpeg(1))
        assert (status, code(answer)) == (404, "upload-urls-disabled")


async def test_an_expired_url_is_refused_with_its_own_code(
    api: Api, session: aiohttp.ClientSession
) -> None:
    past = Claims("1" * 32, "alice", int(time.time()) - 1, LIMIT, ("jpeg",), None)
    status, answer, _ = await use(session, api, f"/v1/uploads/{sign(past, KEY)}", jpeg(1))
    assert (status, code(answer)) == (410, "upload-url-expired")
    # A real one that runs out.
    made = await new_url(session, api, expires_in=1)
    await asyncio.sleep(2.1)
    status, answer, _ = await use(session, api, made["url"], jpeg(1))
    assert (status, code(answer)) == (410, "upload-url-expired")


async def test_a_tampered_url_is_refused_and_changes_nothing(
    api: Api, session: aiohttp.ClientSession
) -> None:
    made = await new_url(session, api, max_bytes=1000)
    token = made["url"].rsplit("/", 1)[1]
    payload, signature = token.split(".")
    # The claims of another owner with a bigger limit, under the old signature.
    forged = Claims(made["upload_id"], "mallory", int(time.time()) + 600, LIMIT, ("jpeg",), None)
    forged_payload = sign(forged, "another key").split(".")[0]
    flipped = payload[:-3] + ("A" if payload[-3] != "A" else "B") + payload[-2:]
    for bad in (
        f"{forged_payload}.{signature}",
        sign(forged, "another key"),
        f"{flipped}.{signature}",
        f"{payload}.{signature[:-2]}",
        payload,
        f"{payload}.",
        "not-a-token",
        f"{payload}.{signature}.x",
    ):
        status, answer, _ = await use(session, api, f"/v1/uploads/{bad}", jpeg(1))
        assert (status, code(answer)) == (403, "upload-url-invalid"), bad
    status, answer, _ = await use(session, api, made["url"], jpeg(1))
    assert status == 202, answer
    assert answer["record"]["owner"] == "alice"


async def test_the_url_limits_hold_and_a_refused_file_does_not_use_it_up(
    api: Api, session: aiohttp.ClientSession
) -> None:
    made = await new_url(session, api, max_bytes=2000, formats=["png"])
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * 3000
    # Declared too large: refused from the headers.
    status, answer, _ = await use(session, api, made["url"], big, content_type="image/png")
    assert (status, code(answer)) == (413, "payload-too-large")

    # Streamed (no Content-Length): cut at the limit.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b"\x89PNG\r\n\x1a\n" + b"\0" * 500

    status, answer, _ = await call(
        session,
        "POST",
        to_local(api, made["url"]),
        headers={"Content-Type": "image/png"},
        data=chunks(),
    )
    assert (status, code(answer)) == (413, "payload-too-large")
    # A JPEG where only PNG is allowed.
    status, answer, _ = await use(session, api, made["url"], jpeg(1))
    assert (status, code(answer)) == (415, "format-not-allowed")
    # Not an image at all; then a truncated PNG.
    status, answer, _ = await use(session, api, made["url"], b"hello", content_type="image/png")
    assert (status, code(answer)) == (415, "unsupported-media-type")
    small = png(1)
    status, answer, _ = await use(session, api, made["url"], small[:-20], content_type="image/png")
    assert (status, code(answer)) == (422, "undecodable-image")
    # Record fields in the form are the URL's to set.
    form = aiohttp.FormData()
    form.add_field("owner", "mallory")
    form.add_field("file", small, content_type="image/png", filename="a.png")
    status, answer, _ = await call(session, "POST", to_local(api, made["url"]), data=form)
    assert (status, code(answer)) == (400, "bad-request")
    # None of those used the URL.
    assert [i.key async for i in api.store.list(UPLOAD_CLAIMS_PREFIX)] == []
    form = aiohttp.FormData()
    form.add_field("file", small, content_type="image/png", filename="a.png")
    status, answer, _ = await call(session, "POST", to_local(api, made["url"]), data=form)
    assert status == 202, answer
    assert len([i.key async for i in api.store.list(UPLOAD_CLAIMS_PREFIX)]) == 1


async def test_concurrent_uploads_with_one_url_make_exactly_one_success(
    api: Api, session: aiohttp.ClientSession
) -> None:
    for round_ in range(3):
        made = await new_url(session, api)
        results = await asyncio.gather(
            *(use(session, api, made["url"], jpeg(10 * round_ + n)) for n in range(4))
        )
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [202, 409, 409, 409], results
        assert {code(a) for s, a, _ in results if s == 409} == {"upload-url-used"}


async def test_cors_is_answered_for_configured_origins_on_the_upload_route_only(
    api: Api, session: aiohttp.ClientSession
) -> None:
    made = await new_url(session, api)
    url = to_local(api, made["url"])
    preflight = {"Access-Control-Request-Method": "POST"}
    status, _, headers = await call(
        session,
        "OPTIONS",
        url,
        headers={
            "Origin": APP_ORIGIN,
            **preflight,
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert headers["Access-Control-Allow-Methods"] == "POST"
    assert "content-type" in headers["Access-Control-Allow-Headers"].lower()
    assert headers["Vary"] == "Origin"
    for origin, extra in [
        ("http://evil.test", {}),
        ("http://app.test:3001", {}),
        (APP_ORIGIN, {"Access-Control-Request-Method": "DELETE"}),
        (APP_ORIGIN, {"Access-Control-Request-Headers": "authorization"}),
    ]:
        status, answer, headers = await call(
            session, "OPTIONS", url, headers={"Origin": origin, **preflight, **extra}
        )
        assert (status, code(answer)) == (403, "origin-not-allowed"), (origin, extra)
        assert not any(h.startswith("Access-Control-") for h in headers)

    # A page of another origin may not even send one (a multipart POST needs no preflight).
    status, answer, headers = await use(
        session, api, made["url"], jpeg(1), headers={"Origin": "http://evil.test"}
    )
    assert (status, code(answer)) == (403, "origin-not-allowed")
    assert "Access-Control-Allow-Origin" not in headers
    status, answer, headers = await use(
        session, api, made["url"], jpeg(1), headers={"Origin": APP_ORIGIN}
    )
    assert status == 202, answer
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "X-Request-ID" in headers["Access-Control-Expose-Headers"]
    # Errors carry the CORS headers too, so the page can read them.
    status, answer, headers = await use(
        session, api, made["url"], jpeg(1), headers={"Origin": APP_ORIGIN}
    )
    assert (status, code(answer)) == (409, "upload-url-used")
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN

    # Every other route is unchanged: no CORS for the configured origin either.
    for method, path in [("OPTIONS", "/v1/images"), ("OPTIONS", "/v1/upload-urls")]:
        status, _, headers = await call(
            session, method, api.url(path), headers={"Origin": APP_ORIGIN, **preflight}
        )
        assert status == 405
        assert "Access-Control-Allow-Origin" not in headers
    status, _, headers = await call(
        session,
        "POST",
        api.url("/v1/images"),
        headers={"Origin": APP_ORIGIN, "Content-Type": "image/jpeg", **AUTH},
        data=jpeg(5),
    )
    assert status == 202
    assert "Access-Control-Allow-Origin" not in headers


async def test_claims_are_swept_once_their_url_has_expired(
    api: Api, session: aiohttp.ClientSession
) -> None:
    soon = await new_url(session, api, expires_in=60)
    later = await new_url(session, api, expires_in=3600)
    for made, n in ((soon, 1), (later, 2)):
        status, _, _ = await use(session, api, made["url"], jpeg(n))
        assert status == 202
    assert await sweep_claims(api.store) == 0
    assert await sweep_claims(api.store, now=time.time() + 120) == 1
    left = [i.key async for i in api.store.list(UPLOAD_CLAIMS_PREFIX)]
    assert len(left) == 1
    assert later["upload_id"] in left[0]
    # The used URL is still refused: by its claim until it expires, then by its expiry.
    status, answer, _ = await use(session, api, later["url"], jpeg(3))
    assert (status, code(answer)) == (409, "upload-url-used")


async def test_expect_100_continue_is_answered_from_the_url_and_its_limits(
    api: Api, session: aiohttp.ClientSession
) -> None:
    made = await new_url(session, api, max_bytes=1000)
    past = Claims("2" * 32, "alice", int(time.time()) - 1, LIMIT, ("jpeg",), None)
    for url, body, expected in [
        (made["url"], b"\xff\xd8\xff" + b"\0" * 2000, (413, "payload-too-large")),
        (f"/v1/uploads/{sign(past, KEY)}", jpeg(1), (410, "upload-url-expired")),
        ("/v1/uploads/forged.token", jpeg(1), (403, "upload-url-invalid")),
    ]:
        async with session.post(
            to_local(api, url), data=body, headers={"Content-Type": "image/jpeg"}, expect100=True
        ) as resp:
            assert (resp.status, code(await resp.json())) == expected, url
    small = jpeg(2)
    assert len(small) < 1000
    async with session.post(
        to_local(api, made["url"]),
        data=small,
        headers={"Content-Type": "image/jpeg"},
        expect100=True,
    ) as resp:
        assert resp.status == 202, await resp.text()
