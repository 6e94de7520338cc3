"""Every request-level limit of ``POST /v1/images``, over real sockets.

The ingest app runs in-process against a real S3-protocol server (moto) and a
real Kafka-protocol broker (tansu). Requests that a polite client would never
send (stalled bodies, lying headers, oversized lines) are written byte by byte
with ``badinput.raw_http``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import aiohttp.test_utils as aiohttp_test
import pytest
import pyvips

from ingest.app import SLOTS_KEY
from ingest.auth import token_digest
from pinhole.app.runtime import build_ingest_app
from pinhole.settings import Auth, Kafka, Limits, Settings
from tests.support import badinput
from tests.support.apps import PinholeTestServer
from tests.support.services import MotoS3, TansuBroker

TOKEN = "limits-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BYTES = 1_000_000


def _jpeg(seed: int) -> bytes:
    data: bytes = (pyvips.Image.black(64, 48) + seed).cast("uchar").write_to_buffer(".jpg")
    return data


@pytest.fixture(scope="module")
async def server(moto_s3: MotoS3, tansu: TansuBroker) -> AsyncIterator[aiohttp_test.TestServer]:
    name = "pinhole-limits"
    settings = Settings(
        storage=moto_s3.url(name),
        queue=tansu.url,
        cache="memory://",
        auth=Auth(token_sha256=[token_digest(TOKEN)]),
        kafka=Kafka(
            jobs_topic=f"{name}.jobs",
            events_topic=f"{name}.events",
            dead_letter_topic=f"{name}.dlq",
            partitions=1,
        ),
        limits=Limits(
            max_upload_bytes=MAX_BYTES,
            max_concurrent_uploads=2,
            read_idle_timeout_seconds=1.0,
            request_timeout_seconds=3.0,
        ),
    )
    srv = PinholeTestServer(build_ingest_app(settings))
    async with srv:
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


async def _expect(resp: aiohttp.ClientResponse, status: int, code: str, what: str) -> None:
    body = await resp.read()
    assert resp.status == status, f"{what}: {resp.status} {body!r}"
    assert resp.headers["Content-Type"].startswith("application/json"), what
    assert resp.headers["Cache-Control"] == "no-store", what
    assert badinput.error_code(body) == code, f"{what}: {body!r}"


_AUTH_LINE = f"Authorization: Bearer {TOKEN}\r\n"


def _post(path: str, headers: str, body: bytes = b"") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: pinhole\r\n{headers}\r\n".encode() + body


def _upload(headers: str, body: bytes = b"", *, token: bool = True) -> bytes:
    """A raw upload request with a JPEG content type and, unless told, the token."""
    auth = _AUTH_LINE if token else ""
    return _post("/v1/images", auth + "Content-Type: image/jpeg\r\n" + headers, body)


def _unterminated_form() -> bytes:
    return (
        b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + _jpeg(7)
    )


async def test_multipart_needs_exactly_one_file_field(
    server: aiohttp_test.TestServer, session: aiohttp.ClientSession
) -> None:
    url = server.make_url("/v1/images")

    def form(*fields: tuple[str, bytes]) -> aiohttp.FormData:
        data = aiohttp.FormData()
        for name, value in fields:
            data.add_field(name, value, filename="x.jpg", content_type="image/jpeg")
        return data

    # A file plus a small extra field is fine: the extra field is read and dropped.
    async with session.post(
        url, data=form(("caption", b"holiday"), ("file", _jpeg(1))), headers=AUTH
    ) as r:
        assert r.status == 202, await r.text()
    text, big = badinput.TEXT_AS_JPEG, ("caption", b"x" * 100_000)
    cases = [
        ("wrong field name", form(("picture", _jpeg(2))), 400, "bad-request"),
        ("two files", form(("file", _jpeg(3)), ("file", _jpeg(4))), 400, "bad-request"),
        ("text in the file field", form(("file", text)), 415, "unsupported-media-type"),
        ("empty file field", form(("file", b"")), 400, "empty-body"),
        ("big extra field", form(big, ("file", _jpeg(5))), 413, "payload-too-large"),
        ("17 fields", form(*[("note", b"x")] * 16, ("file", _jpeg(6))), 400, "bad-request"),
    ]  # fmt: skip
    for what, data, status, code in cases:
        async with session.post(url, data=data, headers=AUTH) as r:
            await _expect(r, status, code, what)

    nested = aiohttp.MultipartWriter("form-data")
    nested.append(aiohttp.MultipartWriter("mixed"))
    async with session.post(url, data=nested, headers=AUTH) as r:
        await _expect(r, 400, "bad-request", "nested multipart")
    for what, content_type, body in (
        ("no boundary", "multipart/form-data", b"abc"),
        ("junk between boundaries", "multipart/form-data; boundary=zz", b"no boundary here"),
        ("no parts", "multipart/form-data; boundary=zz", b"--zz--\r\n"),
        ("no closing boundary", "multipart/form-data; boundary=zz", _unterminated_form()),
    ):
        headers = {**AUTH, "Content-Type": content_type}
        async with session.post(url, data=body, headers=headers) as r:
            await _expect(r, 400, "bad-request", what)


async def test_wrong_methods_and_bad_ids(
    server: aiohttp_test.TestServer, session: aiohttp.ClientSession
) -> None:
    port = server.port
    assert port is not None
    for method, path in (
        ("PUT", "/v1/images"),
        ("PATCH", "/v1/images"),
        ("DELETE", "/v1/images"),
        ("POST", f"/v1/images/{'0' * 32}"),
        ("PUT", f"/v1/images/{'0' * 32}"),
    ):
        async with session.request(method, server.make_url(path), headers=AUTH) as r:
            await _expect(r, 405, "method-not-allowed", f"{method} {path}")
            assert r.headers["Allow"], f"{method} {path}"
    for bad in (
        "..%2F..%2Fetc%2Fpasswd",
        "..",
        "A" * 32,
        "0" * 31,
        "0" * 33,
        "%00" + "0" * 31,
        "%C3%A9" * 16,
        "0" * 31 + "%20",
        "0" * 32 + ".json",
    ):
        for method in ("GET", "DELETE"):
            # Raw bytes: an HTTP client would normalise some of these paths.
            request = f"{method} /v1/images/{bad} HTTP/1.1\r\nHost: x\r\n{_AUTH_LINE}\r\n".encode()
            status, body = await badinput.raw_http(port, request)
            assert (status, badinput.error_code(body)) == (400, "bad-request"), (method, bad)
    # Deleting needs the token before anything else is looked at.
    async with session.delete(server.make_url("/v1/images/not-an-id")) as r:
        await _expect(r, 401, "unauthorized", "DELETE without a token")
    async with session.get(server.make_url(f"/v1/images/{'0' * 32}")) as r:
        await _expect(r, 404, "not-found", "unknown id")


async def test_headers_alone_earn_an_answer_before_the_body(
    server: aiohttp_test.TestServer,
) -> None:
    port = server.port
    assert port is not None
    too_long = f"Content-Length: {MAX_BYTES + 1}\r\n"
    expect = "Expect: 100-continue\r\n"
    text_body = _post("/v1/images", _AUTH_LINE + "Content-Type: text/plain\r\n", b"")
    for what, request, status, code in [
        ("no token", _upload("Content-Length: 3\r\n", b"abc", token=False), 401, "unauthorized"),
        ("basic auth", _upload("Authorization: Basic dTpw\r\n", token=False), 401, "unauthorized"),
        ("wrong token", _upload("Authorization: Bearer x\r\n", token=False), 401, "unauthorized"),
        ("gzip body", _upload("Content-Encoding: gzip\r\n"), 415, "unsupported-media-type"),
        ("text/plain body", text_body, 415, "unsupported-media-type"),
        ("declared too long", _upload(too_long), 413, "payload-too-large"),
        # With Expect the answer comes before the client sends a byte of body.
        ("expect, too long", _upload(expect + too_long), 413, "payload-too-large"),
        ("expect, no token", _upload(expect, token=False), 401, "unauthorized"),
        ("expect, unknown", _upload("Expect: teapot\r\n"), 417, "expectation-failed"),
    ]:
        got, body = await badinput.raw_http(port, request)
        assert got == status, f"{what}: {got} {body!r}"
        assert badinput.error_code(body) == code, what
    # Malformed HTTP never reaches a handler: aiohttp's parser answers 400 (plain
    # text, no traceback) and the connection is closed. The service stays up.
    for what, request in (
        ("non-numeric length", _upload("Content-Length: abc\r\n")),
        ("control bytes in a header", b"GET /healthz HTTP/1.1\r\nX-A: \x01\x02\r\n\r\n"),
        ("oversized header", b"GET /healthz HTTP/1.1\r\nX-Junk: " + b"a" * 20_000 + b"\r\n\r\n"),
        ("oversized URL", b"GET /v1/images/" + b"a" * 9_000 + b" HTTP/1.1\r\n\r\n"),
        ("TLS on the plain port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\r\n\r\n"),
        ("too many headers", b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n"),
    ):
        got, body = await badinput.raw_http(port, request)
        assert 400 <= got < 500, f"{what}: {got}"
        assert b"Traceback" not in body, what
    got, _ = await badinput.raw_http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got == 200


async def test_body_over_the_limit_is_refused_while_streaming(
    server: aiohttp_test.TestServer, session: aiohttp.ClientSession
) -> None:
    start = _jpeg(6)

    async def chunks() -> AsyncIterator[bytes]:
        yield start  # a real JPEG start, so sniffing lets it through
        for _ in range(20):
            yield b"\x00" * 100_000

    # A generator body goes out chunked: no Content-Length to refuse it early.
    headers = {**AUTH, "Content-Type": "image/jpeg"}
    async with session.post(server.make_url("/v1/images"), data=chunks(), headers=headers) as r:
        await _expect(r, 413, "payload-too-large", "chunked body over the limit")

    async def text() -> AsyncIterator[bytes]:
        yield badinput.TEXT_AS_JPEG
        await asyncio.sleep(30)  # never reached: the first bytes already decide
        yield b"x"

    async with session.post(server.make_url("/v1/images"), data=text(), headers=headers) as r:
        await _expect(r, 415, "unsupported-media-type", "sniffed from the first bytes")


async def test_slow_bodies_time_out(server: aiohttp_test.TestServer) -> None:
    port = server.port
    assert port is not None
    # Stalls after a few bytes: the idle timeout (1 s here) ends it.
    stalled = _upload("Content-Length: 5000\r\n", b"\xff\xd8\xff\xe0")
    status, body = await badinput.raw_http(port, stalled)
    assert (status, badinput.error_code(body)) == (408, "request-timeout")

    # Trickles a byte every 0.3 s, never idle for long: the whole-body timeout ends it.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_upload("Content-Length: 5000\r\n"))
    response = asyncio.ensure_future(reader.read(4096))
    for byte in (b"\xff\xd8\xff\xe0" + b"\x00" * 40)[:40]:
        if response.done():
            break
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.3)
    answer = await asyncio.wait_for(response, 30)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"request-timeout"' in answer


async def test_uploads_beyond_the_concurrency_limit_get_429(
    server: aiohttp_test.TestServer, session: aiohttp.ClientSession
) -> None:
    port = server.port
    assert port is not None
    slots = server.app[SLOTS_KEY]
    held = []
    for seed in (7, 8):  # the limit here is 2
        data = _jpeg(seed)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_upload(f"Content-Length: {len(data)}\r\n", data[:10]))
        await writer.drain()
        held.append((reader, writer, data))
    async with asyncio.timeout(10):
        while slots.in_use < 2:  # noqa: ASYNC110 - polling the server's own counter
            await asyncio.sleep(0.02)

    async with session.post(
        server.make_url("/v1/images"), data=_jpeg(9), headers={**AUTH, "Content-Type": "image/jpeg"}
    ) as r:
        await _expect(r, 429, "rate-limited", "third concurrent upload")
        assert int(r.headers["Retry-After"]) >= 1

    # Finish both held uploads before reading either answer: each has been idle
    # since its first bytes, and the 1 s idle limit must not see the other's
    # whole upload (S3 write, Kafka publish) as this one's silence.
    for _, writer, data in held:
        writer.write(data[10:])
    for _, writer, _ in held:
        await writer.drain()
    for reader, writer, _ in held:  # both accepted
        answer = await asyncio.wait_for(reader.read(4096), 30)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 202 "), answer[:300]
    assert slots.in_use == 0
    async with session.post(
        server.make_url("/v1/images"), data=_jpeg(9), headers={**AUTH, "Content-Type": "image/jpeg"}
    ) as r:
        assert r.status == 202, await r.text()
