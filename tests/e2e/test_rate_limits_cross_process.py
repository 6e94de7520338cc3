"""Rate limits hold across processes: two ``pinhole ingest`` processes share one
real Redis (a server of this module's own, so stopping it disturbs no other
suite) with low limits. Per token, per owner and per client address, N requests
are allowed in total whichever process takes them, then ``429
rate-limit-exceeded`` with ``Retry-After`` and the draft's RateLimit headers.

The client address: 127.0.0.1 is the one trusted proxy, so its
``X-Forwarded-For`` names the client; a request from 127.0.0.2 (another
loopback address: a peer nobody trusts) has its spoofed header ignored.

With Redis stopped (SIGSTOP: connections hang) uploads are still accepted:
the limiter fails open, and says so in its metric.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pyvips

from ingest.auth import token_digest
from tests.support.processes import PinholeProcess, start_pinhole
from tests.support.services import RedisServer, start_redis

pytestmark = pytest.mark.slow

TOKEN, OTHER_TOKEN = "rate-limit-token", "rate-limit-other-token"
PER_TOKEN, PER_OWNER, PER_ADDRESS = 4, 3, 2


@dataclass
class Rig:
    redis: RedisServer
    a: PinholeProcess
    b: PinholeProcess

    @property
    def both(self) -> tuple[PinholeProcess, PinholeProcess]:
        return self.a, self.b


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("rate-limits")
    redis = start_redis()
    env = {
        "PINHOLE_STORAGE": f"file://{root / 'store'}",
        "PINHOLE_QUEUE": "memory://",
        "PINHOLE_CACHE": redis.url,
        "PINHOLE_AUTH__TOKEN_SHA256": json.dumps([token_digest(TOKEN), token_digest(OTHER_TOKEN)]),
        "PINHOLE_UPLOAD_URLS__SIGNING_KEYS": '["rate-limit-test-key"]',
        "PINHOLE_RATE_LIMITS__UPLOADS_PER_TOKEN": str(PER_TOKEN),
        "PINHOLE_RATE_LIMITS__UPLOADS_PER_OWNER": str(PER_OWNER),
        "PINHOLE_RATE_LIMITS__UPLOADS_PER_ADDRESS": str(PER_ADDRESS),
        "PINHOLE_TRUSTED_PROXIES": '["127.0.0.1/32"]',
    }
    started: list[PinholeProcess] = []
    try:
        started.append(start_pinhole("ingest", env, root))
        started.append(start_pinhole("ingest", env, root))
        yield Rig(redis, *started)
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        for process in started:
            process.stop()
        redis.stop()


_sizes = iter(range(16, 4096))


def _jpeg() -> bytes:
    """A new image each time, so no upload is a duplicate of another."""
    data: bytes = pyvips.Image.black(next(_sizes), 9).write_to_buffer(".jpg")
    return data


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def code(self) -> str | None:
        error = self.body.get("error")
        return error["code"] if isinstance(error, dict) else None


async def _post(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], data: bytes
) -> Answer:
    async with session.post(url, data=data, headers=headers) as resp:
        return Answer(resp.status, dict(resp.headers), await resp.json())


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"}


def _assert_refused(answer: Answer, policy: str, quota: int) -> None:
    assert (answer.status, answer.code) == (429, "rate-limit-exceeded"), answer
    retry = int(answer.headers["Retry-After"])
    assert 1 <= retry <= 60
    assert f'"{policy}";q={quota};w=60' in answer.headers["RateLimit-Policy"]
    assert f'"{policy}";r=0;t=' in answer.headers["RateLimit"]


async def test_a_token_s_quota_holds_across_both_processes(
    rig: Rig, session: aiohttp.ClientSession
) -> None:
    answers = []
    for n in range(PER_TOKEN + 2):
        process = rig.both[n % 2]
        answers.append(await _post(session, f"{process.url}/v1/images", _auth(TOKEN), _jpeg()))
    allowed, refused = answers[:PER_TOKEN], answers[PER_TOKEN:]
    assert [a.status for a in allowed] == [202] * PER_TOKEN, allowed
    # Counted in Redis, so each process sees the other's uploads.
    assert [a.headers["RateLimit"] for a in allowed] == [
        f'"uploads-per-token";r={PER_TOKEN - n};t={a.headers["RateLimit"].rsplit("t=", 1)[1]}'
        for n, a in enumerate(allowed, start=1)
    ]
    for answer in refused:
        _assert_refused(answer, "uploads-per-token", PER_TOKEN)
    # Refused before the body was read: with Expect: 100-continue, before it is sent.
    async with session.post(
        f"{rig.b.url}/v1/images", data=_jpeg(), headers=_auth(TOKEN), expect100=True
    ) as resp:
        assert resp.status == 429
        assert (await resp.json())["error"]["code"] == "rate-limit-exceeded"


async def test_an_owner_s_quota_holds_across_processes_and_tokens(
    rig: Rig, session: aiohttp.ClientSession
) -> None:
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    answers = []
    for n in range(PER_OWNER + 1):
        process = rig.both[n % 2]
        # The other token, so its own quota (4) is not what refuses the 4th.
        url = f"{process.url}/v1/images?owner={owner}"
        answers.append(await _post(session, url, _auth(OTHER_TOKEN), _jpeg()))
    assert [a.status for a in answers[:PER_OWNER]] == [202] * PER_OWNER, answers
    _assert_refused(answers[PER_OWNER], "uploads-per-owner", PER_OWNER)


async def _upload_url(session: aiohttp.ClientSession, rig: Rig, owner: str) -> str:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.post(
        f"{rig.a.url}/v1/upload-urls", json={"owner": owner}, headers=headers
    ) as resp:
        assert resp.status == 201, await resp.text()
        url: str = (await resp.json())["url"]
    # The URL names the ingest_url of the settings; either process takes it.
    return url.split("/v1/uploads/", 1)[1]


async def test_uploads_without_a_token_count_per_client_address_from_trusted_proxies_only(
    rig: Rig, session: aiohttp.ClientSession
) -> None:
    async def use(process: PinholeProcess, forwarded_for: str, s: aiohttp.ClientSession) -> Answer:
        token = await _upload_url(session, rig, f"o-{uuid.uuid4().hex[:8]}")
        headers = {"Content-Type": "image/jpeg", "X-Forwarded-For": forwarded_for}
        return await _post(s, f"{process.url}/v1/uploads/{token}", headers, _jpeg())

    # Through the trusted proxy (127.0.0.1): the client is the right-most hop.
    client = "6.6.6.6, 203.0.113.5"
    answers = [await use(rig.both[n % 2], client, session) for n in range(PER_ADDRESS + 1)]
    assert [a.status for a in answers[:PER_ADDRESS]] == [202] * PER_ADDRESS, answers
    _assert_refused(answers[PER_ADDRESS], "uploads-per-address", PER_ADDRESS)
    # The same left part (what a client may write itself) from another client: its own quota.
    assert (await use(rig.a, "6.6.6.6, 203.0.113.6", session)).status == 202

    # From 127.0.0.2, a peer nobody trusts: a fresh address in the header every
    # time changes nothing, the peer is the client.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as untrusted:
        spoofed = [
            await use(rig.both[n % 2], f"198.51.100.{n}", untrusted) for n in range(PER_ADDRESS + 1)
        ]
    assert [a.status for a in spoofed[:PER_ADDRESS]] == [202] * PER_ADDRESS, spoofed
    _assert_refused(spoofed[PER_ADDRESS], "uploads-per-address", PER_ADDRESS)


async def _failed_open(session: aiohttp.ClientSession, process: PinholeProcess) -> float:
    async with session.get(f"{process.url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(
            'pinhole_rate_limit_requests_total{limit="uploads-per-token",outcome="failed-open"}'
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_with_redis_stopped_uploads_are_accepted_and_counted_as_failed_open(
    rig: Rig, session: aiohttp.ClientSession
) -> None:
    # OTHER_TOKEN's quota is untouched by the other tests but for the owner test's
    # 3 uploads, so one more would be allowed anyway: send more than its quota.
    before = [await _failed_open(session, p) for p in rig.both]
    os.kill(rig.redis.proc.pid, signal.SIGSTOP)
    try:
        statuses = [
            (await _post(session, f"{p.url}/v1/images", _auth(OTHER_TOKEN), _jpeg())).status
            for p in (*rig.both, *rig.both, *rig.both)
        ]
    finally:
        os.kill(rig.redis.proc.pid, signal.SIGCONT)
    assert statuses == [202] * 6
    after = [await _failed_open(session, p) for p in rig.both]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3]
    for process in rig.both:
        assert "rate limiter unavailable" in process.log_path.read_text()
        assert process.proc.poll() is None
