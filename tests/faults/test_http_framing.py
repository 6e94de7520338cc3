"""HTTP framing against real ``pinhole ingest`` processes, over raw TCP.

The header deadline (``PINHOLE_LIMITS__HEADER_TIMEOUT_SECONDS``, one second
here) covers a request's headers and nothing else: not its body, not a slow
handler, not an idle keep-alive connection between two requests. A request
line without an HTTP version (HTTP/0.9 style) is malformed: ``400 bad-request``
in the JSON error body, never an ``HTTP/0.9`` answer (pinhole/http_server.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import pytest
import pyvips

from ingest.auth import token_digest
from tests.support import badinput
from tests.support.latency_proxy import latency_proxies
from tests.support.processes import PinholeProcess, start_pinhole
from tests.support.services import MotoS3

pytestmark = pytest.mark.slow

TOKEN = "framing-secret"
HEADER_TIMEOUT = 1.0
# How long an idle connection is watched for an unsolicited answer: three deadlines.
QUIET = 3 * HEADER_TIMEOUT


def _env(storage: str) -> dict[str, str]:
    return {
        "PINHOLE_STORAGE": storage,
        "PINHOLE_QUEUE": "memory://",
        "PINHOLE_AUTH__TOKEN_SHA256": json.dumps([token_digest(TOKEN)]),
        "PINHOLE_LIMITS__HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PinholeProcess]:
    root = tmp_path_factory.mktemp("framing")
    process = start_pinhole("ingest", _env(f"file://{root / 'store'}"), root)
    yield process
    process.stop()


def _large_png() -> bytes:
    """About 430 KB of PNG that does not compress (random pixels), new bytes
    every call so every upload is a new image (202, not a duplicate's 200)."""
    width, height = 480, 300
    pixels = pyvips.Image.new_from_memory(os.urandom(width * height * 3), width, height, 3, "uchar")
    data: bytes = pixels.write_to_buffer(".png", compression=0)
    return data


def _upload_head(length: int, token: str = TOKEN) -> bytes:
    return (
        "POST /v1/images HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: image/png\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """One response: status, head, body (by Content-Length)."""
    async with asyncio.timeout(30):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
    return int(head.split(b" ", 2)[1]), head, body


async def _expect_quiet(reader: asyncio.StreamReader, what: str) -> None:
    """Nothing arrives on the idle connection for QUIET seconds, and it stays open."""
    try:
        data = await asyncio.wait_for(reader.read(65536), QUIET)
    except TimeoutError:
        return
    if not data:
        raise AssertionError(f"{what}: the server closed the idle connection")
    raise AssertionError(f"{what}: unsolicited bytes on an idle connection: {data[:300]!r}")


async def _expect_still_serving(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, what: str
) -> None:
    """The same connection still answers its next request."""
    writer.write(HEALTHZ)
    await writer.drain()
    status, head, _ = await _response(reader)
    assert status == 200, (what, head)


async def _upload_then_idle(port: int) -> None:
    body = _large_png()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_upload_head(len(body)) + body)
        await writer.drain()
        status, head, answer = await _response(reader)
        assert status == 202, (head, answer[:300])
        await _expect_quiet(reader, "after a 202")
        await _expect_still_serving(reader, writer, "after a 202 and an idle wait")
    finally:
        writer.close()


async def test_idle_keep_alive_connections_after_large_uploads_get_no_408(
    ingest: PinholeProcess,
) -> None:
    """The repro from issue #20: a ~400 KB upload, its 202, then silence on the
    socket past the header deadline. Several connections at once, as a pool has."""
    await asyncio.gather(*(_upload_then_idle(ingest.port) for _ in range(4)))


async def test_headers_and_body_in_separate_writes(ingest: PinholeProcess) -> None:
    body = _large_png()
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.port)
    try:
        # Complete headers, then a pause longer than the header deadline, then
        # the body in pieces: only the headers were ever under the deadline.
        writer.write(_upload_head(len(body)))
        await writer.drain()
        await asyncio.sleep(2 * HEADER_TIMEOUT)
        for start in range(0, len(body), 65536):
            writer.write(body[start : start + 65536])
            await writer.drain()
            await asyncio.sleep(0.05)
        status, head, answer = await _response(reader)
        assert status == 202, (head, answer[:300])
        await _expect_quiet(reader, "after a body sent apart from its headers")
        await _expect_still_serving(reader, writer, "after a body sent apart from its headers")
    finally:
        writer.close()


async def test_a_body_that_arrives_after_its_answer_is_not_the_next_request(
    ingest: PinholeProcess,
) -> None:
    """A bad token is refused from the headers alone; the client then sends the
    body it announced. Those bytes are the old request's body, not the start of
    a new request's headers, so no 408 follows on the idle connection."""
    body = _large_png()
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.port)
    try:
        writer.write(_upload_head(len(body), token="wrong"))
        await writer.drain()
        status, head, answer = await _response(reader)
        assert (status, badinput.error_code(answer)) == (401, "unauthorized"), head
        writer.write(body)
        await writer.drain()
        await _expect_quiet(reader, "after a refused upload's body")
        await _expect_still_serving(reader, writer, "after a refused upload's body")
    finally:
        writer.close()


async def test_the_next_request_after_a_large_upload_is_under_the_deadline(
    ingest: PinholeProcess,
) -> None:
    """The deadline still covers every request's headers: after a large upload
    on the same connection, a next request whose headers trickle in gets 408."""
    body = _large_png()
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.port)
    try:
        writer.write(_upload_head(len(body)) + body)
        await writer.drain()
        status, head, answer = await _response(reader)
        assert status == 202, (head, answer[:300])
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        async with asyncio.timeout(10 * HEADER_TIMEOUT):
            for byte in b"X-Slow: " + b"a" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    answer = await asyncio.wait_for(reader.read(65536), HEADER_TIMEOUT / 4)
                except TimeoutError:
                    continue
                answer += await reader.read()  # the rest, up to the server's close
                break
    finally:
        writer.close()
    head, _, error = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    assert badinput.error_code(error) == "request-timeout"


async def test_a_slow_handler_is_answered_by_the_handler_not_by_408(
    moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """S3 behind a link with 0.4 s of latency each way: storing the original and
    the manifest keeps the handler busy past the header deadline, and its answer
    (202) is what the client gets."""
    root = tmp_path_factory.mktemp("framing-slow")
    async with latency_proxies([moto_s3.port], delay=0.4) as (proxy,):
        storage = (
            f"s3://pinhole-framing-slow?endpoint=http://127.0.0.1:{proxy.port}&region=us-east-1"
        )
        # start_pinhole blocks while it polls /healthz; the proxy needs this loop.
        process = await asyncio.to_thread(start_pinhole, "ingest", _env(storage), root)
        try:
            for _ in range(2):
                body = _large_png()
                reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
                try:
                    loop = asyncio.get_running_loop()
                    sent = loop.time()
                    writer.write(_upload_head(len(body)) + body)
                    await writer.drain()
                    status, head, answer = await _response(reader)
                    handled_for = loop.time() - sent
                    assert status == 202, (head, answer[:300])
                    # What this test is about: the handler outlived the header deadline.
                    assert handled_for > HEADER_TIMEOUT, handled_for
                    await _expect_quiet(reader, "after a slow 202")
                finally:
                    writer.close()
        finally:
            await asyncio.to_thread(process.stop)


async def _answer_then_close(port: int, request: bytes) -> list[tuple[bytes, bytes]]:
    """Every response to ``request``, up to the server closing the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(30):
            data = await reader.read()  # to EOF: the server must close
    finally:
        writer.close()
    answers = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answers.append((head, rest[:length]))
        data = rest[length:]
    return answers


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /healthz\r\n\r\n",
        b"GET /healthz\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/0.9\r\n\r\n",
        b"POST /v1/images\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd",
    ],
)
async def test_a_request_line_without_an_http_version_gets_400(
    ingest: PinholeProcess, request_line: bytes
) -> None:
    answers = await _answer_then_close(ingest.port, request_line)
    assert len(answers) == 1, answers
    head, body = answers[0]
    assert head.startswith(b"HTTP/1."), head
    assert int(head.split(b" ", 2)[1]) == 400, head
    assert badinput.error_code(body) == "bad-request"


async def test_an_unversioned_request_pipelined_after_a_good_one(ingest: PinholeProcess) -> None:
    """The good request is served; the unversioned one after it gets 400 and the
    connection closes."""
    answers = await _answer_then_close(ingest.port, HEALTHZ + b"GET /healthz\r\n\r\n")
    statuses = [int(head.split(b" ", 2)[1]) for head, _ in answers]
    assert statuses == [200, 400], answers
    assert answers[1][0].startswith(b"HTTP/1."), answers[1][0]
    assert badinput.error_code(answers[1][1]) == "bad-request"


def test_the_upload_spans_many_socket_reads() -> None:
    """The window in issue #20 needs a body over one 64 KB read; this one has several."""
    assert len(_large_png()) > 256 * 1024
