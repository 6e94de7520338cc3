"""Upload by URL over HTTP, and the SSRF guard in front of every fetch.

Nothing here sends a packet beyond 127.0.0.0/8: the names the tests use are
mapped by a stand-in for the fetch's one lookup (``ingest.fetch.getaddrinfo``),
and the ``guard`` fixture fails any test that tries to connect a socket to an
address outside loopback, and records every connect, so a refused URL is shown
to be refused before any connection is attempted. The images are served by an
aiohttp server on loopback, reached only with ``url_fetch.allow_loopback`` on
(the setting the README marks as for tests only).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from ingest import fetch
from ingest.auth import token_digest
from pinhole.domain.ids import image_id_for_bytes
from pinhole.queue.memory import MemoryJobQueue
from pinhole.records.sqlite import SqliteRecordStore
from pinhole.settings import Auth, Limits, Settings, UrlFetch
from storage.fs import FsBlobStore
from tests.support.apps import serving_ingest

TOKEN = "url-fetch-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 100_000
# The stand-in DNS: every name a test uses, and what it "resolves" to.
NAMES = {
    "images.test": ["127.0.0.1"],
    "private.test": ["10.0.0.7"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["127.0.0.1", "192.168.1.20"],
    "mapped.test": ["::ffff:10.1.2.3"],
    "cgnat.test": ["100.64.3.4"],
}


def jpeg(n: int = 0) -> bytes:
    data: bytes = pyvips.Image.black(32 + n, 24).write_to_buffer(".jpg")
    return data


@dataclass
class Guard:
    """Every socket connect attempted, and every lookup the fetch made."""

    connects: list[tuple[str, int]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def connects_to(self, port: int) -> list[tuple[str, int]]:
        return [c for c in self.connects if c[1] == port]


def _is_loopback(host: str) -> bool:
    address = ipaddress.ip_address(host.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> Guard:
    seen = Guard()

    def check(address: Any) -> None:
        if isinstance(address, tuple):
            host, port = str(address[0]), int(address[1])
            seen.connects.append((host, port))
            if not _is_loopback(host):
                pytest.fail(f"a connect to {host}:{port}, outside loopback, was attempted")

    # asyncio's selector loop connects with sock.connect (non-blocking), so
    # this one patch sees every connect, the event loop's included.
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    async def getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
        seen.lookups.append(host)
        if host not in NAMES:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        infos: list[tuple[Any, ...]] = []
        for text in NAMES[host]:
            address = ipaddress.ip_address(text)
            if address.version == 4:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (text, port)))
            else:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (text, port, 0, 0)))
        return infos

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(fetch, "getaddrinfo", getaddrinfo)
    return seen


@dataclass
class Upstream:
    """The image host, on loopback."""

    port: int
    hosts: list[str] = field(default_factory=list)

    def url(self, path: str, host: str = "images.test") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    photo = jpeg()
    state = Upstream(0)

    async def serve_photo(request: web.Request) -> web.Response:
        state.hosts.append(request.host)
        return web.Response(body=photo, content_type="image/jpeg")

    async def redirect(request: web.Request) -> web.Response:
        state.hosts.append(request.host)
        raise web.HTTPFound(request.query["to"])

    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound("/photo.jpg" if n == 0 else f"/chain/{n - 1}")

    async def big_declared(_request: web.Request) -> web.Response:
        return web.Response(body=photo + b"\0" * LIMIT, content_type="image/jpeg")

    async def big_streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(photo[:64])
        for _ in range(20):
            await response.write(b"\0" * 10_000)
        await response.write_eof()
        return response

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(photo[:100])
        await asyncio.sleep(3)
        return response

    async def trickle(request: web.Request) -> web.StreamResponse:
        # Never silent for long (under the idle timeout), never done.
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(photo[:100])
        for _ in range(40):
            await asyncio.sleep(0.1)
            await response.write(b"\0")
        return response

    async def text(_request: web.Request) -> web.Response:
        return web.Response(text="<html>not an image</html>", content_type="text/html")

    async def missing(_request: web.Request) -> web.Response:
        return web.Response(status=404, text="gone")

    app = web.Application()
    app.add_routes(
        [
            web.get("/photo.jpg", serve_photo),
            web.get("/redirect", redirect),
            web.get("/chain/{n}", chain),
            web.get("/big-declared", big_declared),
            web.get("/big-streamed", big_streamed),
            web.get("/slow", slow),
            web.get("/trickle", trickle),
            web.get("/page.html", text),
            web.get("/missing", missing),
        ]
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.port = server.port or 0
    try:
        yield state
    finally:
        await server.close()


@dataclass
class Api:
    base: str

    def url(self, path: str) -> str:
        return self.base + path


@asynccontextmanager
async def serving(tmp_path: Path, config: UrlFetch) -> AsyncIterator[Api]:
    settings = Settings(
        auth=Auth(token_sha256=[token_digest(TOKEN)]),
        limits=Limits(max_upload_bytes=LIMIT),
        url_fetch=config,
    )
    store = FsBlobStore(tmp_path / "blobs")
    records = SqliteRecordStore(tmp_path / "records.db", timeout_seconds=5.0)
    async with serving_ingest(settings, store, MemoryJobQueue(), records) as (base, _):
        yield Api(base)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(
        tmp_path, UrlFetch(allow_loopback=True, read_idle_timeout_seconds=0.5)
    ) as running:
        yield running


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[Api]:
    """The production defaults: loopback refused too."""
    async with serving(tmp_path / "strict", UrlFetch()) as running:
        yield running


async def post_url(
    session: aiohttp.ClientSession, api: Api, url: object, **fields: Any
) -> tuple[int, Any]:
    async with session.post(
        api.url("/v1/images"), headers=AUTH, json={"url": url, **fields}
    ) as resp:
        text = await resp.text()
        return resp.status, json.loads(text)


def code(answer: Any) -> str:
    return str(answer["error"]["code"])


def fetches(result: str) -> float:
    return REGISTRY.get_sample_value("pinhole_url_fetches_total", {"result": result}) or 0.0


async def test_an_image_url_is_fetched_and_takes_the_upload_path(
    api: Api, upstream: Upstream, guard: Guard, session: aiohttp.ClientSession
) -> None:
    before = fetches("fetched")
    status, answer = await post_url(
        session, api, upstream.url("/photo.jpg"), owner="alice", metadata={"from": "url"}
    )
    assert status == 202, answer
    assert answer["id"] == image_id_for_bytes(jpeg())
    assert answer["record"]["owner"] == "alice"
    assert answer["record"]["metadata"] == {"from": "url"}
    # The name was looked up once; the request kept it as its Host.
    assert guard.lookups == ["images.test"]
    assert upstream.hosts == [f"images.test:{upstream.port}"]
    assert guard.connects_to(upstream.port) == [("127.0.0.1", upstream.port)]
    assert fetches("fetched") == before + 1
    # The same image again: a duplicate of a pending image is redone, as an upload is.
    status, again = await post_url(session, api, upstream.url("/photo.jpg"))
    assert status == 202, again
    assert again["id"] == answer["id"]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://[::1]/",
        "http://127.0.0.1/",
        "http://100.64.0.1/",
        "http://192.168.0.1:8080/",
        "http://172.16.5.4/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://192.0.2.1/",
        "http://198.18.0.1/",
        "https://[fd00::1]/",
        "https://[fe80::1]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[2002:0a00:0001::1]/",
        "http://[64:ff9b::a00:1]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "http://[ff02::1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://0177.0.0.1/",
        "http://017700000001./",
    ],
)
async def test_a_literal_internal_address_is_refused_before_any_socket(
    strict: Api, guard: Guard, session: aiohttp.ClientSession, url: str
) -> None:
    connects = len(guard.connects)
    status, answer = await post_url(session, strict, url)
    assert (status, code(answer)) == (400, "url-address-not-allowed"), answer
    assert guard.lookups == []
    # The only connect was this test's own to the ingest server.
    assert len(guard.connects) == connects + 1


@pytest.mark.parametrize(
    "name", ["private.test", "metadata.test", "mixed.test", "mapped.test", "cgnat.test"]
)
async def test_a_name_resolving_to_an_internal_address_is_refused_before_connecting(
    api: Api, upstream: Upstream, guard: Guard, session: aiohttp.ClientSession, name: str
) -> None:
    # Even with loopback allowed, one private address among the answers refuses the host.
    status, answer = await post_url(session, api, upstream.url("/photo.jpg", host=name))
    assert (status, code(answer)) == (400, "url-address-not-allowed"), answer
    assert guard.lookups == [name]
    assert guard.connects_to(upstream.port) == []
    assert upstream.hosts == []


async def test_loopback_is_refused_unless_the_test_setting_allows_it(
    strict: Api, upstream: Upstream, guard: Guard, session: aiohttp.ClientSession
) -> None:
    for url in (upstream.url("/photo.jpg"), f"http://127.0.0.1:{upstream.port}/photo.jpg"):
        status, answer = await post_url(session, strict, url)
        assert (status, code(answer)) == (400, "url-address-not-allowed"), answer
    assert guard.connects_to(upstream.port) == []
    assert upstream.hosts == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://images.test/a.jpg", "url-not-allowed"),
        ("file:///etc/passwd", "url-not-allowed"),
        ("gopher://images.test:70/", "url-not-allowed"),
        ("http://user:secret@images.test/a.jpg", "url-not-allowed"),
        ("/relative/a.jpg", "url-not-allowed"),
        ("http:///a.jpg", "invalid-url"),
        ("http://images.test:99999/", "invalid-url"),
        ("", "invalid-url"),
        (42, "invalid-url"),
        ("http://images.test/" + "a" * 3000, "invalid-url"),
    ],
)
async def test_urls_that_are_not_plain_http_are_refused(
    strict: Api, guard: Guard, session: aiohttp.ClientSession, url: object, expected: str
) -> None:
    status, answer = await post_url(session, strict, url)
    assert (status, code(answer)) == (400, expected), answer
    assert guard.lookups == []


async def test_the_body_and_the_record_fields_are_checked_first(
    strict: Api, guard: Guard, session: aiohttp.ClientSession
) -> None:
    for body, expected in [
        ({"url": "http://images.test/", "owner": "../x"}, "invalid-owner"),
        ({"url": "http://images.test/", "owner": 5}, "invalid-owner"),
        ({"url": "http://images.test/", "owner": "a", "alias": ["b"]}, "invalid-alias"),
        ({"url": "http://images.test/", "alias": "a"}, "bad-request"),
        ({"url": "http://images.test/", "owner": "a", "metadata": [1]}, "invalid-metadata"),
        ({"url": "http://images.test/", "caption": "x"}, "bad-request"),
        ({"owner": "a"}, "invalid-url"),
    ]:
        async with session.post(strict.url("/v1/images"), headers=AUTH, json=body) as resp:
            answer = await resp.json()
            assert (resp.status, code(answer)) == (400, expected), body
    async with session.post(strict.url("/v1/images"), json={"url": "http://images.test/"}) as resp:
        assert resp.status == 401
    assert guard.lookups == []


async def test_an_allowlist_limits_the_hosts(
    tmp_path: Path, upstream: Upstream, guard: Guard, session: aiohttp.ClientSession
) -> None:
    config = UrlFetch(allow_loopback=True, allow_hosts=["*.cdn.test", "images.test"])
    async with serving(tmp_path, config) as api:
        status, answer = await post_url(session, api, upstream.url("/photo.jpg"))
        assert status == 202, answer
        for host in ("private.test", "cdn.test", "evilimages.test"):
            status, answer = await post_url(session, api, upstream.url("/photo.jpg", host=host))
            assert (status, code(answer)) == (400, "url-not-allowed"), host
    assert guard.lookups == ["images.test"]


async def test_every_redirect_is_checked_like_the_first_url(
    api: Api, upstream: Upstream, guard: Guard, session: aiohttp.ClientSession
) -> None:
    for target in (
        "http://private.test/secret",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/",
        "file:///etc/passwd",
    ):
        status, answer = await post_url(session, api, upstream.url("/redirect") + "?to=" + target)
        assert status == 400, answer
        assert code(answer) in ("url-address-not-allowed", "url-not-allowed"), answer
    assert all(_is_loopback(host) for host, _ in guard.connects)
    # Three redirects are followed, a fourth is not.
    status, answer = await post_url(session, api, upstream.url("/chain/2"))
    assert status == 202, answer
    status, answer = await post_url(session, api, upstream.url("/chain/3"))
    assert (status, code(answer)) == (422, "url-too-many-redirects"), answer


async def test_oversized_and_slow_responses_are_cut(
    api: Api, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    for path in ("/big-declared", "/big-streamed"):
        status, answer = await post_url(session, api, upstream.url(path))
        assert (status, code(answer)) == (413, "payload-too-large"), path
    status, answer = await post_url(session, api, upstream.url("/slow"))
    assert (status, code(answer)) == (422, "url-fetch-timeout"), answer


async def test_upstream_failures_and_non_images_get_their_codes(
    api: Api, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    # Not an image: the very answer an upload of those bytes gets.
    status, answer = await post_url(session, api, upstream.url("/page.html"))
    assert (status, code(answer)) == (415, "unsupported-media-type")
    async with session.post(
        api.url("/v1/images"),
        headers={**AUTH, "Content-Type": "application/octet-stream"},
        data=b"<html>not an image</html>",
    ) as resp:
        assert (resp.status, code(await resp.json())) == (415, "unsupported-media-type")
    status, answer = await post_url(session, api, upstream.url("/missing"))
    assert (status, code(answer)) == (422, "url-fetch-failed")
    status, answer = await post_url(session, api, upstream.url("/photo.jpg", host="nowhere.test"))
    assert (status, code(answer)) == (422, "url-unresolvable")
    # Nothing listens on the port (the upstream's, closed): the connection is refused.
    port = upstream.port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status, answer = await post_url(session, api, f"http://images.test:{port}/photo.jpg")
    assert (status, code(answer)) == (422, "url-fetch-failed")


async def test_a_response_that_trickles_is_cut_at_the_total_timeout(
    tmp_path: Path, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    config = UrlFetch(allow_loopback=True, read_idle_timeout_seconds=2, total_timeout_seconds=1)
    async with serving(tmp_path, config) as api:
        status, answer = await post_url(session, api, upstream.url("/trickle"))
        assert (status, code(answer)) == (422, "url-fetch-timeout"), answer
        # A fetch that fits is unaffected.
        status, answer = await post_url(session, api, upstream.url("/photo.jpg"))
        assert status == 202, answer
