"""The record API over HTTP: uploads with owners, listing, records, aliases,
owner deletes, the sweep of images no record names any more, and the edge's
stable URLs by alias (served by the same app, as `pinhole up` does).

Real parts: the ingest app served by Pinhole's own runner, a local-disk store,
and the record store on SQLite or sharded over two real MariaDB servers (the
harness's fixtures); the in-process queue stands in for Kafka (the transcoder
is not under test here).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips
from aiohttp import web

from ingest.app import SWEEPER_KEY
from ingest.auth import token_digest
from pinhole import cache_policy
from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.keys import manifest_key, original_key, sweep_key
from pinhole.events import alias_of_event
from pinhole.ports import BlobStore, RecordStore
from pinhole.queue.memory import MemoryJobQueue
from pinhole.records.sharded import ShardedRecordStore
from pinhole.settings import Auth, Records, Settings
from pinhole.sharding import seed_map
from server.aliases import configure_aliases
from storage.fs import FsBlobStore
from tests.support.apps import serving_ingest
from tests.support.mariadb import MariaDbServer
from tests.support.records import mariadb_store, owner_on, record_store

TOKEN = "records-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JPEG = {**AUTH, "Content-Type": "image/jpeg"}
GRACE = 5.0


ALICE = owner_on(True, "alice")
BOB = owner_on(False, "bob")


def jpeg(n: int) -> bytes:
    """A distinct small valid JPEG per ``n`` (a different image id each)."""
    data: bytes = pyvips.Image.black(16 + n, 12).write_to_buffer(".jpg")
    return data


@dataclass
class Api:
    base: str
    store: BlobStore
    records: RecordStore
    app: web.Application
    queue: MemoryJobQueue
    settings: Settings

    def url(self, path: str) -> str:
        return self.base + path


async def _serve(tmp_path: Path, records: RecordStore) -> AsyncIterator[Api]:
    settings = Settings(
        auth=Auth(token_sha256=[token_digest(TOKEN)]),
        record_api=Records(sweep_grace_seconds=GRACE, sweep_interval_seconds=3600),
    )
    store = FsBlobStore(tmp_path / "blobs")
    queue = MemoryJobQueue()
    aliases = functools.partial(configure_aliases, records=records)
    async with serving_ingest(settings, store, queue, records, prepare=aliases) as (base, app):
        yield Api(base, store, records, app, queue, settings)


@pytest.fixture(params=["sqlite", "sharded-mariadb"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    kind = "sharded" if request.param == "sharded-mariadb" else request.param
    records = await record_store(kind, request, tmp_path, timeout_seconds=2.0)
    async for running in _serve(tmp_path, records):
        yield running


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
    session: aiohttp.ClientSession, api: Api, body: bytes, **query: str
) -> tuple[int, Any]:
    return await call(session, "POST", api.url("/v1/images"), headers=JPEG, data=body, params=query)


async def test_an_upload_with_an_owner_answers_with_its_record(
    api: Api, session: aiohttp.ClientSession
) -> None:
    body = jpeg(1)
    status, answer = await upload(
        session, api, body, owner=ALICE, alias="avatar", metadata='{"caption": "hi", "n": 1}'
    )
    assert status == 202, answer
    record = answer["record"]
    assert answer["id"] == record["image_id"] == image_id_for_bytes(body)
    assert str(record["id"]).isdigit()
    assert (record["owner"], record["alias"]) == (ALICE, "avatar")
    assert record["metadata"] == {"caption": "hi", "n": 1}
    image_id = answer["id"]
    fan = f"{image_id[:2]}/{image_id[2:4]}/{image_id[4:6]}"
    assert record["image"]["urls"]["236x"].endswith(f"/236x/{fan}/{image_id}")
    status, got = await call(session, "GET", api.url(f"/v1/records/{record['id']}"))
    assert (status, got) == (200, record)
    status, by_alias = await call(session, "GET", api.url(f"/v1/owners/{ALICE}/aliases/avatar"))
    assert (status, by_alias) == (200, record)


async def test_multipart_fields_make_the_record_before_or_after_the_file(
    api: Api, session: aiohttp.ClientSession
) -> None:
    for n, fields_first in ((2, True), (3, False)):
        form = aiohttp.FormData()
        if fields_first:
            form.add_field("owner", ALICE)
            form.add_field("metadata", '{"where": "form"}')
        form.add_field("file", jpeg(n), content_type="image/jpeg", filename="a.jpg")
        if not fields_first:
            form.add_field("owner", ALICE)
            form.add_field("metadata", '{"where": "form"}')
        status, answer = await call(session, "POST", api.url("/v1/images"), data=form)
        assert status == 202, answer
        assert answer["record"]["owner"] == ALICE
        assert answer["record"]["metadata"] == {"where": "form"}


async def test_two_owners_of_the_same_bytes_get_two_records_and_one_image(
    api: Api, session: aiohttp.ClientSession
) -> None:
    body = jpeg(4)
    _, first = await upload(session, api, body, owner=ALICE)
    _, second = await upload(session, api, body, owner=BOB)
    assert first["id"] == second["id"]
    assert first["record"]["id"] != second["record"]["id"]
    assert await api.records.count_by_image(first["id"]) == 2


async def test_listing_is_newest_first_in_pages_that_neither_skip_nor_repeat(
    api: Api, session: aiohttp.ClientSession
) -> None:
    made = []
    for n in range(7):
        _, answer = await upload(session, api, jpeg(10 + n), owner=BOB)
        made.append(answer["record"]["id"])
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        status, page = await call(
            session, "GET", api.url(f"/v1/owners/{BOB}/images"), params=params
        )
        assert status == 200, page
        pages += 1
        seen += [r["id"] for r in page["records"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    assert pages == 3


async def test_patch_changes_metadata_and_alias_and_refuses_a_taken_alias(
    api: Api, session: aiohttp.ClientSession
) -> None:
    _, one = await upload(session, api, jpeg(20), owner=ALICE, alias="cover")
    _, two = await upload(session, api, jpeg(21), owner=ALICE)
    url = api.url(f"/v1/records/{two['record']['id']}")
    status, patched = await call(session, "PATCH", url, json={"metadata": {"v": 2}})
    assert (status, patched["metadata"]) == (200, {"v": 2})
    status, error = await call(session, "PATCH", url, json={"alias": "cover"})
    assert (status, error["error"]["code"]) == (409, "alias-taken")
    status, patched = await call(session, "PATCH", url, json={"alias": "second"})
    assert (status, patched["alias"]) == (200, "second")
    status, cleared = await call(session, "PATCH", url, json={"alias": None})
    assert (status, cleared["alias"]) == (200, None)
    status, error = await call(session, "PATCH", url, json={"owner": "someone-else"})
    assert (status, error["error"]["code"]) == (400, "bad-request")
    assert one["record"]["alias"] == "cover"


async def test_an_alias_moves_to_a_record_or_to_a_new_upload(
    api: Api, session: aiohttp.ClientSession
) -> None:
    alias_url = api.url(f"/v1/owners/{ALICE}/aliases/profile")
    _, one = await upload(session, api, jpeg(30), owner=ALICE, alias="profile")
    _, two = await upload(session, api, jpeg(31), owner=ALICE)
    status, moved = await call(session, "PUT", alias_url, json={"record_id": two["record"]["id"]})
    assert (status, moved["id"], moved["alias"]) == (200, two["record"]["id"], "profile")
    status, old = await call(session, "GET", api.url(f"/v1/records/{one['record']['id']}"))
    assert (status, old["alias"]) == (200, None)
    # A new upload straight to the alias: the alias leaves the record that had it.
    status, uploaded = await call(session, "PUT", alias_url, headers=JPEG, data=jpeg(32))
    assert status == 202, uploaded
    assert uploaded["record"]["alias"] == "profile"
    assert uploaded["record"]["image_id"] == image_id_for_bytes(jpeg(32))
    status, now = await call(session, "GET", alias_url)
    assert (status, now["id"]) == (200, uploaded["record"]["id"])
    # Another owner's record cannot take this owner's alias.
    _, bobs = await upload(session, api, jpeg(33), owner=BOB)
    status, error = await call(session, "PUT", alias_url, json={"record_id": bobs["record"]["id"]})
    assert (status, error["error"]["code"]) == (404, "not-found")
    status, _ = await call(session, "DELETE", alias_url)
    assert status == 204
    status, error = await call(session, "GET", alias_url)
    assert (status, error["error"]["code"]) == (404, "alias-not-found")


async def test_the_last_record_going_deletes_the_image_after_the_grace_period(
    api: Api, session: aiohttp.ClientSession
) -> None:
    shared, alone = jpeg(40), jpeg(41)
    _, a = await upload(session, api, shared, owner=ALICE)
    await upload(session, api, shared, owner=BOB)
    _, c = await upload(session, api, alone, owner=ALICE)
    for answer in (a, c):
        status, _ = await call(session, "DELETE", api.url(f"/v1/records/{answer['record']['id']}"))
        assert status == 204
    status, error = await call(session, "GET", api.url(f"/v1/records/{c['record']['id']}"))
    assert (status, error["error"]["code"]) == (404, "record-not-found")
    sweeper = api.app[SWEEPER_KEY]
    # Within the grace period nothing goes.
    assert await sweeper.sweep_once() == (0, 0)
    assert await api.store.head(manifest_key(c["id"])) is not None
    # After it: the image with no record goes; the one Bob still uses stays.
    assert await sweeper.sweep_once(now=time.time() + GRACE + 1) == (1, 1)
    assert await api.store.head(manifest_key(c["id"])) is None
    assert await api.store.head(original_key(c["id"])) is None
    assert await api.store.head(manifest_key(a["id"])) is not None
    assert await api.store.head(sweep_key(a["id"])) is None


async def test_a_reupload_during_a_sweep_keeps_the_image(
    api: Api, session: aiohttp.ClientSession
) -> None:
    body = jpeg(50)
    _, first = await upload(session, api, body, owner=ALICE)
    image_id = first["id"]
    await call(session, "DELETE", api.url(f"/v1/records/{first['record']['id']}"))
    sweeper = api.app[SWEEPER_KEY]
    later = time.time() + GRACE + 1
    # The re-upload and the sweep race; whichever order they land in, the
    # image is there at the end and its new record names it.
    uploaded, swept = await asyncio.gather(
        upload(session, api, body, owner=BOB), sweeper.sweep_once(now=later)
    )
    status, answer = uploaded
    assert status in (200, 202), answer
    assert await api.records.count_by_image(image_id) == 1
    assert await api.store.head(manifest_key(image_id)) is not None
    assert await api.store.head(original_key(image_id)) is not None
    assert swept in ((0, 1), (1, 0), (0, 0))


async def test_a_reupload_after_a_sweep_restores_the_image(
    api: Api, session: aiohttp.ClientSession
) -> None:
    body = jpeg(51)
    _, first = await upload(session, api, body, owner=ALICE)
    await call(session, "DELETE", api.url(f"/v1/records/{first['record']['id']}"))
    assert await api.app[SWEEPER_KEY].sweep_once(now=time.time() + GRACE + 1) == (1, 0)
    assert await api.store.head(manifest_key(first["id"])) is None
    status, again = await upload(session, api, body, owner=ALICE)
    assert (status, again["status"]) == (202, "pending")
    assert await api.store.head(original_key(first["id"])) is not None


async def test_deleting_an_owner_removes_every_record_and_says_none_are_left(
    api: Api, session: aiohttp.ClientSession
) -> None:
    for n in range(5):
        await upload(session, api, jpeg(60 + n), owner=BOB)
    _, kept = await upload(session, api, jpeg(70), owner=ALICE)
    status, answer = await call(session, "DELETE", api.url(f"/v1/owners/{BOB}"))
    assert (status, answer) == (200, {"owner": BOB, "removed": 5, "more": False})
    _, page = await call(session, "GET", api.url(f"/v1/owners/{BOB}/images"))
    assert page["records"] == []
    _, alices = await call(session, "GET", api.url(f"/v1/owners/{ALICE}/images"))
    assert [r["id"] for r in alices["records"]] == [kept["record"]["id"]]
    # Every image Bob used is a sweep candidate.
    for n in range(5):
        assert await api.store.head(sweep_key(image_id_for_bytes(jpeg(60 + n)))) is not None


async def test_the_content_takedown_removes_every_record_of_the_image(
    api: Api, session: aiohttp.ClientSession
) -> None:
    body = jpeg(80)
    _, a = await upload(session, api, body, owner=ALICE)
    await upload(session, api, body, owner=BOB)
    status, _ = await call(session, "DELETE", api.url(f"/v1/images/{a['id']}"))
    assert status == 204
    assert await api.records.count_by_image(a["id"]) == 0
    status, _ = await call(session, "GET", api.url(f"/v1/records/{a['record']['id']}"))
    assert status == 404


async def test_a_record_for_an_image_stored_before_records_existed(
    api: Api, session: aiohttp.ClientSession
) -> None:
    _, anonymous = await upload(session, api, jpeg(90))
    assert "record" not in anonymous
    status, made = await call(
        session,
        "POST",
        api.url("/v1/records"),
        json={"owner": ALICE, "image_id": anonymous["id"], "metadata": {"from": "backfill"}},
    )
    assert (status, made["image_id"]) == (201, anonymous["id"])
    status, error = await call(
        session,
        "POST",
        api.url("/v1/records"),
        json={"owner": ALICE, "image_id": image_id_for_bytes(b"never uploaded")},
    )
    assert (status, error["error"]["code"]) == (404, "not-found")
    for bad, code in (
        ({"metadata": [1]}, "invalid-metadata"),
        ({"alias": "../x"}, "invalid-alias"),
    ):
        status, error = await call(
            session,
            "POST",
            api.url("/v1/records"),
            json={"owner": ALICE, "image_id": anonymous["id"], **bad},
        )
        assert (status, error["error"]["code"]) == (400, code)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"owner": "no spaces"}, "invalid-owner"),
        ({"owner": "x" * 65}, "invalid-owner"),
        ({"owner": "ok", "metadata": "{not json"}, "invalid-metadata"),
        ({"owner": "ok", "metadata": "[1, 2]"}, "invalid-metadata"),
        ({"owner": "ok", "metadata": json.dumps({"k": "v" * 5000})}, "invalid-metadata"),
        ({"owner": "ok", "alias": "../etc"}, "invalid-alias"),
        ({"alias": "orphan"}, "bad-request"),
        ({"metadata": "{}"}, "bad-request"),
    ],
)
async def test_a_bad_record_field_is_refused_before_anything_is_stored(
    api: Api, session: aiohttp.ClientSession, query: dict[str, str], code: str
) -> None:
    body = jpeg(100)
    status, error = await upload(session, api, body, **query)
    assert (status, error["error"]["code"]) == (400, code), error
    assert await api.store.head(original_key(image_id_for_bytes(body))) is None


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/records/0123", 400, "invalid-record-id"),
        ("GET", "/v1/records/notanumber", 400, "invalid-record-id"),
        ("GET", "/v1/records/99999999999999999999", 400, "invalid-record-id"),
        ("GET", "/v1/records/12345", 404, "record-not-found"),
        ("GET", "/v1/owners/a%20b/images", 400, "invalid-owner"),
        ("GET", "/v1/owners/alice/images?cursor=garbage", 400, "invalid-cursor"),
        ("GET", "/v1/owners/alice/images?limit=0", 400, "bad-request"),
        ("GET", "/v1/owners/alice/images?limit=1001", 400, "bad-request"),
        ("POST", "/v1/records/12345", 405, "method-not-allowed"),
        ("PATCH", "/v1/records/12345", 400, "bad-request"),
    ],
)
async def test_bad_record_requests_get_json_errors(
    api: Api, session: aiohttp.ClientSession, method: str, path: str, status: int, code: str
) -> None:
    got, error = await call(session, method, api.url(path), data=b"junk")
    assert (got, error["error"]["code"]) == (status, code), error


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v1/owners/{ALICE}/images"),
        ("GET", "/v1/records/12345"),
        ("DELETE", "/v1/records/12345"),
        ("DELETE", f"/v1/owners/{ALICE}"),
        ("PUT", f"/v1/owners/{ALICE}/aliases/x"),
    ],
)
async def test_every_record_route_needs_the_token(
    api: Api, session: aiohttp.ClientSession, method: str, path: str
) -> None:
    status, error = await call(session, method, api.url(path), headers={"X": "y"}, json={})
    assert (status, error["error"]["code"]) == (401, "unauthorized")


async def test_a_shard_server_down_answers_503_for_its_owners_only(
    tmp_path: Path, session: aiohttp.ClientSession, mariadb: MariaDbServer, mariadb_factory: Any
) -> None:
    doomed: MariaDbServer = mariadb_factory()
    a = await mariadb_store(mariadb, "default", timeout_seconds=2.0)
    b = await mariadb_store(doomed, "b", timeout_seconds=2.0)
    records = ShardedRecordStore({"default": a, "b": b}, seed_map({"800-fff": "b"}, ["b"]))
    async for api in _serve(tmp_path, records):
        doomed.kill()
        status, error = await upload(session, api, jpeg(110), owner=BOB)
        assert status == 503, error
        assert error["error"]["code"] == "record-store-unavailable"
        status, answer = await upload(session, api, jpeg(111), owner=ALICE)
        assert status == 202, answer
        status, _ = await call(session, "GET", api.url(f"/v1/owners/{ALICE}/images"))
        assert status == 200
        status, error = await call(session, "GET", api.url(f"/v1/owners/{BOB}/images"))
        assert (status, error["error"]["code"]) == (503, "record-store-unavailable")


async def _redirect(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str]]:
    async with session.get(url, allow_redirects=False) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def _alias_events(api: Api, count: int) -> list[tuple[str, str | None]]:
    """The first ``count`` alias.moved events on the events topic."""
    subscription = await api.queue.subscribe(
        api.settings.kafka.events_topic, "alias-events", start="earliest"
    )
    found: list[tuple[str, str | None]] = []
    try:
        async with asyncio.timeout(10):
            async for delivery in subscription:
                moved = alias_of_event(delivery.message)
                if moved is not None:
                    found.append(moved)
                if len(found) == count:
                    break
    finally:
        await subscription.close()
    return found


async def test_an_alias_url_redirects_to_what_the_alias_names_now(
    api: Api, session: aiohttp.ClientSession
) -> None:
    _, one = await upload(session, api, jpeg(120), owner=ALICE, alias="hero")
    _, two = await upload(session, api, jpeg(121), owner=ALICE)
    fan = f"{one['id'][:2]}/{one['id'][2:4]}/{one['id'][4:6]}"
    status, headers = await _redirect(session, api.url(f"/a/{ALICE}/hero/236x"))
    assert (status, headers["Location"]) == (302, f"/236x/{fan}/{one['id']}")
    assert headers["Cache-Control"] == cache_policy.ALIAS
    assert set(headers["Surrogate-Key"].split()) == {f"alias-{ALICE}-hero", f"alias-{ALICE}"}
    status, headers = await _redirect(session, api.url(f"/a/{ALICE}/hero/736x.webp"))
    assert (status, headers["Location"]) == (302, f"/736x/{fan}/{one['id']}.webp")
    # The alias moves: the stable URL follows, and alias.moved is published.
    status, _ = await call(
        session,
        "PUT",
        api.url(f"/v1/owners/{ALICE}/aliases/hero"),
        json={"record_id": two["record"]["id"]},
    )
    assert status == 200
    status, headers = await _redirect(session, api.url(f"/a/{ALICE}/hero/236x"))
    assert (status, headers["Location"].rsplit("/", 1)[-1]) == (302, two["id"])
    status, _ = await call(session, "DELETE", api.url(f"/v1/owners/{ALICE}/aliases/hero"))
    assert status == 204
    assert await _alias_events(api, 2) == [(ALICE, "hero"), (ALICE, "hero")]
    status, headers = await _redirect(session, api.url(f"/a/{ALICE}/hero/236x"))
    assert (status, headers["Cache-Control"]) == (404, cache_policy.ERROR)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/a/alice/hero/nope", 404, "not-found"),
        ("/a/alice/hero/236x.bmp", 404, "not-found"),
        ("/a/alice/nobody-has-this/236x", 404, "alias-not-found"),
        ("/a/bad%20owner/hero/236x", 400, "invalid-owner"),
        ("/a/alice/..hero/236x", 400, "invalid-alias"),
    ],
)
async def test_bad_alias_urls_get_json_errors_that_are_not_cached(
    api: Api, session: aiohttp.ClientSession, path: str, status: int, code: str
) -> None:
    async with session.get(api.url(path), allow_redirects=False) as resp:
        body = await resp.json()
        assert (resp.status, body["error"]["code"]) == (status, code)
        assert resp.headers["Cache-Control"] == cache_policy.ERROR


async def test_deleting_an_owner_or_an_aliased_record_publishes_alias_moved(
    api: Api, session: aiohttp.ClientSession
) -> None:
    _, one = await upload(session, api, jpeg(130), owner=BOB, alias="logo")
    await upload(session, api, jpeg(131), owner=BOB, alias="banner")
    await call(session, "DELETE", api.url(f"/v1/records/{one['record']['id']}"))
    await call(session, "DELETE", api.url(f"/v1/owners/{BOB}"))
    assert await _alias_events(api, 2) == [(BOB, "logo"), (BOB, None)]
