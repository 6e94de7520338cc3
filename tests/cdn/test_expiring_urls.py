"""Expiring signed URLs through real nginx and varnish (cdn_config/).

Before its expiry an expiring URL is served, and what a client is told it may
keep it (``max-age`` less the ``Age`` a cache adds) never reaches past the
expiry. After the expiry it is refused ``403 signature-expired``: no cache
serves its copy past the signature, stale or not (both configs serve stale
copies of other URLs while they refresh them, or when the origin fails).

The origin allows no clock skew here (``signature_skew_seconds=0``), so the
expiry is the instant it is refused; waiting a few seconds stands in for the
minutes a real URL lives.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator

import aiohttp
import pytest

from pinhole.domain.ladder import Format
from server.signing import sign_path, signed_tail
from tests.support.cdn import Stack, start_stack

pytestmark = pytest.mark.slow

KEY = "cdn-expiry-key"
LIFE = 4
_MAX_AGE = re.compile(r"max-age=([0-9]+)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "PINHOLE_EDGE__SIGNING_KEYS": json.dumps([KEY]),
        "PINHOLE_EDGE__SIGNATURE_SKEW_SECONDS": "0",
    }
    with start_stack(tmp_path_factory, env) as running:
        yield running


def _kept_for(headers: dict[str, str]) -> int:
    """How long a client may keep the response: max-age less its Age (0 for
    ``no-store``, which the origin sends when under a second is left)."""
    if "no-store" in headers["Cache-Control"]:
        return 0
    match = _MAX_AGE.search(headers["Cache-Control"])
    assert match is not None, headers["Cache-Control"]
    return int(match.group(1)) - int(headers.get("Age", "0"))


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


@pytest.mark.parametrize("cdn", ["nginx", "varnish"])
async def test_an_expiring_url_is_kept_no_longer_than_its_signature_and_refused_after(
    stack: Stack, session: aiohttp.ClientSession, cdn: str
) -> None:
    base = stack.caches[cdn].url
    width = {"nginx": 320, "varnish": 330}[cdn]
    expires = int(time.time()) + LIFE
    tail = signed_tail(width, 200, "fit", stack.images[1], Format.WEBP, expires)
    url = base + sign_path(KEY, tail)

    served = []
    while time.time() < expires - 1:
        status, headers, body = await _get(session, url)
        assert status == 200, (cdn, body)
        assert headers["Content-Type"] == "image/webp"
        left = expires - time.time()
        # Never a year, never past the expiry (a second of rounding allowed).
        assert "immutable" not in headers["Cache-Control"], headers["Cache-Control"]
        assert _kept_for(headers) <= left + 1, (cdn, headers, left)
        served.append(headers.get("X-Cache-Status"))
        await asyncio.sleep(0.7)
    assert len(served) >= 2, served

    await asyncio.sleep(max(0.0, expires - time.time()) + 1.2)
    # Past the expiry: refused by the origin, whatever either cache holds, and
    # every time (a stale copy served while a refresh runs would be a leak).
    for _ in range(3):
        status, headers, body = await _get(session, url)
        assert status == 403, (cdn, status, headers.get("X-Cache-Status"))
        assert json.loads(body)["error"]["code"] == "signature-expired"
        assert headers.get("X-Cache-Status") != "HIT"
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("cdn", ["nginx", "varnish"])
async def test_a_url_without_an_expiry_is_still_cached_for_a_year(
    stack: Stack, session: aiohttp.ClientSession, cdn: str
) -> None:
    """The change for expiring URLs leaves the others as they were."""
    width = {"nginx": 340, "varnish": 350}[cdn]
    url = stack.caches[cdn].url + sign_path(
        KEY, signed_tail(width, 200, "fit", stack.images[1], Format.WEBP)
    )
    status, headers, _ = await _get(session, url)
    assert status == 200
    assert headers["X-Cache-Status"] == "MISS"
    assert "max-age=31536000" in headers["Cache-Control"]
    status, headers, _ = await _get(session, url)
    assert (status, headers["X-Cache-Status"]) == (200, "HIT")
