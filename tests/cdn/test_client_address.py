"""The client address behind real nginx and varnish (cdn_config/), configured
as the origin's trusted proxies: the rate limit on renders counts the real
client, never the X-Forwarded-For the client sends itself.

The caches and the origin talk over 127.0.0.1, the one trusted proxy address.
Clients connect to the caches from other loopback addresses (127.0.0.2, ...),
so each has an address of its own that the caches see and must pass on. Every
request is a signed size not rendered before (a render, counted per client
address), with a different spoofed ``X-Forwarded-For``: if the origin believed
the header, no client would ever reach the limit.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from pinhole.domain.ids import ImageId
from pinhole.domain.ladder import Format
from server.signing import sign_path, signed_tail
from tests.support.cdn import Stack, start_stack

pytestmark = pytest.mark.slow

KEY = "cdn-client-address-key"
RENDERS = 3
# Each cache's clients, so the two caches' counts never meet.
CLIENTS = {"nginx": ("127.0.0.2", "127.0.0.3"), "varnish": ("127.0.0.4", "127.0.0.5")}
_widths = itertools.count(101)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "PINHOLE_EDGE__SIGNING_KEYS": json.dumps([KEY]),
        "PINHOLE_RATE_LIMITS__RENDERS_PER_ADDRESS": str(RENDERS),
        "PINHOLE_TRUSTED_PROXIES": '["127.0.0.1/32"]',
    }
    with start_stack(tmp_path_factory, env) as running:
        yield running


@pytest.fixture
async def clients() -> AsyncIterator[dict[str, aiohttp.ClientSession]]:
    """A session bound to each client address."""
    sessions = {
        address: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(address, 0)),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        for addresses in CLIENTS.values()
        for address in addresses
    }
    try:
        yield sessions
    finally:
        for session in sessions.values():
            await session.close()


def _render_path(image_id: ImageId) -> str:
    """A signed size never asked for before: a render at the origin."""
    return sign_path(KEY, signed_tail(next(_widths), 90, "fit", image_id, Format.JPEG))


async def _get(
    session: aiohttp.ClientSession, url: str, spoofed: str
) -> tuple[int, dict[str, str], bytes]:
    # ``spoofed`` (10.9.x.x, or another client's 127.0.0.x) is only a header
    # value: every connection goes from a 127.0.0.x client to the loopback CDN.
    async with session.get(url, headers={"X-Forwarded-For": spoofed}) as resp:
        return resp.status, dict(resp.headers), await resp.read()


@pytest.mark.parametrize("cdn", ["nginx", "varnish"])
async def test_the_limit_counts_the_real_client_not_a_spoofed_forwarded_for(
    stack: Stack, clients: dict[str, aiohttp.ClientSession], cdn: str
) -> None:
    base = stack.caches[cdn].url
    first, second = (clients[address] for address in CLIENTS[cdn])
    image_id = stack.images[0]
    for n in range(RENDERS):
        status, headers, body = await _get(first, base + _render_path(image_id), f"10.9.{n}.1")
        assert status == 200, body
        assert headers["Content-Type"] == "image/jpeg"
    # A new spoofed address again: still the same client, over its limit.
    status, headers, body = await _get(first, base + _render_path(image_id), "10.9.99.1")
    assert status == 429, (cdn, status, body)
    assert json.loads(body)["error"]["code"] == "rate-limit-exceeded"
    assert int(headers["Retry-After"]) >= 1
    assert '"renders-per-address";r=0;' in headers["RateLimit"]
    # ...and a refusal is never cached for anyone.
    assert headers.get("X-Cache-Status") != "HIT"

    # Another client behind the same cache has its own count: the origin counts
    # neither the cache's address nor the first client's spoofed ones.
    status, _, body = await _get(second, base + _render_path(image_id), "10.9.0.1")
    assert status == 200, (cdn, body)
    # Naming the first client's real address in the header does not make the
    # second client count as the first.
    spoof_first = CLIENTS[cdn][0]
    status, _, body = await _get(second, base + _render_path(image_id), spoof_first)
    assert status == 200, (cdn, body)
