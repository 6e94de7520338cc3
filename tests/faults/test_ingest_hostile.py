"""Hostile uploads against a real ``pinhole ingest`` process: every one gets its
4xx and code, the process stays up, and its peak memory stays bounded.

The process talks to a real Kafka-protocol broker (tansu) and S3-protocol
server (moto). Peak RSS is read from the kernel (``VmHWM`` in
``/proc/<pid>/status``), so it counts libvips and every C allocation, not
just Python objects.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pyvips

from ingest.auth import token_digest
from tests.support import badinput
from tests.support.processes import PinholeProcess, start_pinhole
from tests.support.services import MotoS3, TansuBroker

pytestmark = pytest.mark.slow

TOKEN = "hostile-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MIB = 1024 * 1024
# Generous: the idle process sits near 150 MiB; decoding one bomb would need gigabytes.
PEAK_RSS_BOUND = 450 * MIB
PEAK_RSS_GROWTH_BOUND = 200 * MIB


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


@pytest.fixture(scope="module")
def ingest(
    tansu: TansuBroker, moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PinholeProcess]:
    name = "pinhole-hostile"
    env = {
        "PINHOLE_STORAGE": moto_s3.url(name),
        "PINHOLE_QUEUE": tansu.url,
        "PINHOLE_AUTH__TOKEN_SHA256": json.dumps([token_digest(TOKEN)]),
        "PINHOLE_KAFKA__JOBS_TOPIC": f"{name}.jobs",
        "PINHOLE_KAFKA__EVENTS_TOPIC": f"{name}.events",
        "PINHOLE_KAFKA__DEAD_LETTER_TOPIC": f"{name}.dlq",
        "PINHOLE_KAFKA__PARTITIONS": "1",
        "PINHOLE_LIMITS__HEADER_TIMEOUT_SECONDS": "2",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    process = start_pinhole("ingest", env, tmp_path_factory.mktemp("hostile-logs"))
    yield process
    process.stop()


def _jpeg(seed: int) -> bytes:
    data: bytes = (pyvips.Image.black(64, 48) + seed).cast("uchar").write_to_buffer(".jpg")
    return data


async def _post(
    session: aiohttp.ClientSession, url: str, data: object, content_type: str
) -> tuple[int, bytes]:
    headers = {**AUTH, "Content-Type": content_type}
    async with session.post(f"{url}/v1/images", data=data, headers=headers) as resp:
        body = await resp.read()
        if resp.status >= 400:
            assert resp.headers["Content-Type"].startswith("application/json"), body
            assert resp.headers["Cache-Control"] == "no-store"
        return resp.status, body


async def test_hostile_uploads_get_their_code_and_memory_stays_bounded(
    ingest: PinholeProcess, session: aiohttp.ClientSession
) -> None:
    status, body = await _post(session, ingest.url, _jpeg(1), "image/jpeg")
    assert status == 202, body  # warmed up: libvips, the S3 client and the producer are loaded
    baseline = peak_rss(ingest.proc.pid)

    hostile = badinput.hostile_uploads()
    for case in hostile:
        status, body = await _post(session, ingest.url, case.data, case.content_type)
        assert (status, badinput.error_code(body)) == (case.status, case.code), case.name

    # The bombs again, 16 at a time (half the default upload slots): none may be
    # decoded, so memory must not add up.
    bombs = [c for c in hostile if c.code in ("image-too-large", "metadata-too-large")]
    gate = asyncio.Semaphore(16)

    async def bomb(case: badinput.Hostile) -> tuple[int, bytes]:
        async with gate:
            return await _post(session, ingest.url, case.data, case.content_type)

    results = await asyncio.gather(*(bomb(c) for c in bombs * 4))
    for case, (status, body) in zip(bombs * 4, results, strict=True):
        assert (status, badinput.error_code(body)) == (case.status, case.code), case.name

    # A body far over the 50 MB limit, streamed without a length: spooled to
    # disk and cut off at the limit, never held in memory.
    async def endless() -> AsyncIterator[bytes]:
        yield _jpeg(2)
        for _ in range(80):
            yield b"\0" * MIB

    status, body = await _post(session, ingest.url, endless(), "image/jpeg")
    assert (status, badinput.error_code(body)) == (413, "payload-too-large")

    peak = peak_rss(ingest.proc.pid)
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak // MIB} MiB (baseline {baseline // MIB} MiB)"
    assert peak - baseline < PEAK_RSS_GROWTH_BOUND, f"{baseline // MIB} -> {peak // MIB} MiB"

    # Still up, still accepting good uploads, and nothing was an unhandled error.
    assert ingest.proc.poll() is None, ingest.log_tail()
    async with session.get(f"{ingest.url}/healthz") as resp:
        assert resp.status == 200
    status, body = await _post(session, ingest.url, _jpeg(3), "image/jpeg")
    assert status == 202, body
    log = ingest.log_path.read_text()
    assert "unhandled error" not in log, ingest.log_tail()
    print(f"ingest peak RSS: baseline {baseline // MIB} MiB, after the bombs {peak // MIB} MiB")


async def test_malformed_http_is_refused_with_json_and_the_process_survives(
    ingest: PinholeProcess,
) -> None:
    """aiohttp's parser refuses these before any handler runs; the answer is
    still our JSON error (pinhole/http_server.py), never its plain text."""
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    cases = [
        # TLS sent to the plain-HTTP port.
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\r\n\r\n", 400, "bad-request"),
        (
            b"GET /healthz HTTP/1.1\r\nX-Junk: " + b"a" * 20_000 + b"\r\n\r\n",
            431,
            "headers-too-large",
        ),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", 431, "headers-too-large"),
        (b"GET /healthz HTTP/1.1\r\nX-A: \x01\x02\r\n\r\n", 400, "bad-request"),
        # More header lines than aiohttp's 128, each small.
        (
            b"GET /healthz HTTP/1.1\r\n"
            + b"".join(b"X-%d: v\r\n" % i for i in range(500))
            + b"\r\n",
            431,
            "headers-too-large",
        ),
        (b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad-request"),
        (
            b"POST /v1/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 5\r\n\r\n",
            400,
            "bad-request",
        ),
        (
            b"GET /v1/images/" + b"%2e%2e%2f" * 20 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "bad-request",
        ),
        (b"BREW /v1/images HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad-request"),
        (b"PATCH /v1/images HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method-not-allowed"),
        (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400, "bad-request"),
        (
            f"POST /v1/images HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: image/jpeg\r\n"
            "Transfer-Encoding: chunked\r\n\r\nzz\r\n".encode(),
            400,
            "bad-request",
        ),
    ]
    for request, status_wanted, code_wanted in cases:
        status, body = await badinput.raw_http(ingest.port, request)
        assert (status, badinput.error_code(body)) == (status_wanted, code_wanted), request[:60]
    status, _ = await badinput.raw_http(ingest.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert ingest.proc.poll() is None, ingest.log_tail()


async def test_headers_trickled_slowly_get_408_and_the_connection_closes(
    ingest: PinholeProcess,
) -> None:
    """Slow-loris on headers: one header byte per half second never finishes
    within PINHOLE_LIMITS__HEADER_TIMEOUT_SECONDS (2 s here)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        async with asyncio.timeout(20):
            for byte in b"X-Slow: " + b"a" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    answer = await asyncio.wait_for(reader.read(65536), timeout=0.5)
                except TimeoutError:
                    continue
                answer += await reader.read()  # the rest, up to the server's close
                break
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    assert badinput.error_code(body) == "request-timeout"
    # A request that keeps to the deadline, on a fresh connection, is served.
    status, _ = await badinput.raw_http(ingest.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
