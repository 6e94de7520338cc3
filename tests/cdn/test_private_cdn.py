"""Private images behind the real nginx and varnish of cdn_config/.

A public image's URL is cached at both CDNs for a year. Its only record is made
private on a real `pinhole ingest`; `image.visibility` goes over a real
Kafka-protocol broker (tansu) to a real `pinhole cdn-purge`, which purges both
caches at once and again once the origin's visibility TTL has run out. The
origin here hears no events (it runs without a broker, like an edge that has
not heard yet), so in between it may still answer the CDN's refill with the
public bytes: the second purge is what takes those out. After that neither
CDN gives the bytes to a client without a signature, and the signed URL the
record API hands out is answered `Cache-Control: private` and never stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingest.auth import token_digest
from pinhole import cache_policy
from tests.support.cdn import Stack, cdn_get, purge_roles, start_stack, variant_path_of
from tests.support.processes import PinholeProcess, wait_for_log
from tests.support.services import TansuBroker

pytestmark = pytest.mark.slow

KEY = "private-cdn-signing-key"
TOKEN = "private-cdn-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The origin trusts what it learned of an image this long (no events reach it).
TTL_SECONDS = 3.0
PURGE_SECONDS = 30.0
ACCEPTS = ("image/avif", "image/webp", "*/*")
SETTINGS = {
    "PINHOLE_EDGE__SIGNING_KEYS": json.dumps([KEY]),
    "PINHOLE_EDGE__VISIBILITY_TTL_SECONDS": str(TTL_SECONDS),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The cdn/ stack, its origin able to verify signatures."""
    with start_stack(tmp_path_factory, SETTINGS) as running:
        yield running


@pytest.fixture
def roles(
    stack: Stack, tansu: TansuBroker, unique_name: str, tmp_path: Path
) -> Iterator[tuple[PinholeProcess, PinholeProcess]]:
    env = {
        **SETTINGS,
        "PINHOLE_AUTH__ALLOW_ANONYMOUS": "false",
        "PINHOLE_AUTH__TOKEN_SHA256": json.dumps([token_digest(TOKEN)]),
        # Signed URLs name the origin; the test sends them to each CDN instead.
        "PINHOLE_PUBLIC_URL": stack.origin.url,
    }
    with purge_roles(stack, tansu.url, unique_name, tmp_path, env) as started:
        yield started


async def _json(
    session: aiohttp.ClientSession, method: str, url: str, **fields: Any
) -> dict[str, Any]:
    async with session.request(method, url, json=fields, headers=AUTH) as resp:
        assert resp.status < 300, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_a_record_gone_private_leaves_both_cdns_and_its_signed_url_is_never_stored(
    stack: Stack,
    roles: tuple[PinholeProcess, PinholeProcess],
    session: aiohttp.ClientSession,
) -> None:
    ingest, purger = roles
    image_id = stack.images[2]
    record = await _json(
        session, "POST", f"{ingest.url}/v1/records", owner="cdn-private", image_id=image_id
    )
    bases = [stack.caches["varnish"].url, stack.caches["nginx"].url]
    paths = [variant_path_of(image_id), variant_path_of(image_id, ext=".jpg")]
    public: dict[tuple[str, str], bytes] = {}
    for base in bases:
        for path in paths:
            for accept in ACCEPTS:
                status, _, _, body, _ = await cdn_get(session, base + path, Accept=accept)
                assert status == 200, (base, path, accept)
                again = await cdn_get(session, base + path, Accept=accept)
                assert again[:2] == (200, "HIT"), (base, path, accept)
                public[path, accept] = body
    await wait_for_log(purger, "cdn purger listening for deletes")

    changed_at = time.monotonic()
    view = await _json(session, "PATCH", f"{ingest.url}/v1/records/{record['id']}", private=True)
    # Well inside the year the copies were cached for, neither CDN serves them
    # to a client without a signature, in any Accept class.
    for base in bases:
        for path in paths:
            for accept in ACCEPTS:
                deadline = time.monotonic() + PURGE_SECONDS
                while True:
                    status, cache, _, body, _ = await cdn_get(session, base + path, Accept=accept)
                    if status == 403 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert status == 403, (base, path, accept, cache)
                assert json.loads(body)["error"]["code"] == "image-private"
    # Past the second purge, nothing an origin that had not heard yet answered
    # in between is left: still refused, at the origin's say-so (MISS).
    await asyncio.sleep(max(0.0, changed_at + TTL_SECONDS + 3.0 - time.monotonic()))
    for base in bases:
        for path in paths:
            for accept in ACCEPTS:
                status, cache, _, _, _ = await cdn_get(session, base + path, Accept=accept)
                assert (status, cache) == (403, "MISS"), (base, path, accept)

    # The owner's signed URL, through each CDN: served, private, never stored.
    signed = view["image"]["urls"]["236x"]
    assert signed.startswith(f"{stack.origin.url}/s/")
    for base in bases:
        url = signed.replace(stack.origin.url, base)
        for accept in ACCEPTS:
            for _ in range(2):
                async with session.get(url, headers={"Accept": accept}) as resp:
                    body = await resp.read()
                    assert resp.status == 200, (base, accept)
                    # Never from the cache (nginx says BYPASS where its config
                    # passes every expiring URL through, MISS where it only
                    # declines to store a private answer).
                    assert resp.headers["X-Cache-Status"] in ("MISS", "BYPASS"), (base, accept)
                    control = resp.headers["Cache-Control"]
                assert control.startswith("private, max-age="), control
                assert int(control.rsplit("=", 1)[1]) <= view["urls_expire_at"] - time.time() + 1
                assert body == public[paths[0], accept]
            # Another client, without the signature, still gets no bytes.
            status, _, _, _, _ = await cdn_get(session, base + paths[0], Accept=accept)
            assert status == 403

    # Public again: the next request reaches the origin and is cached as before.
    await _json(session, "PATCH", f"{ingest.url}/v1/records/{record['id']}", private=False)
    await asyncio.sleep(TTL_SECONDS + 0.5)
    for base in bases:
        async with session.get(base + paths[1]) as resp:
            await resp.read()
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == cache_policy.IMMUTABLE
