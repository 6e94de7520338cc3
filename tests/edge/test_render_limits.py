"""On-the-fly renders are limited per client address; cache hits never count.

An edge built by the same runtime code as ``pinhole serve`` (in-process
counters: ``memory://`` cache), with a low ``renders_per_address``. Behind the
trusted proxy (127.0.0.1 here), each ``X-Forwarded-For`` client has its own quota.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from pinhole.domain.keys import fan_out
from pinhole.settings import Cache, RateLimits, Settings
from tests.support.edge import get, running_edge
from tests.support.photos import load_photo
from tests.support.seed import seed_image


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        storage=f"file://{tmp_path}",
        queue="memory://",
        cache="memory://",
        hot_cache=Cache(l1_max_bytes=64 * 1024 * 1024),
        rate_limits=RateLimits(renders_per_address=2),
        trusted_proxies=["127.0.0.1/32"],
    )


async def test_renders_per_address_refuse_the_third_cold_variant_not_hits(
    settings: Settings, session: aiohttp.ClientSession
) -> None:
    async with running_edge(settings) as edge:
        image_id = await seed_image(edge.components.store, load_photo("autumn-2560x1600.jpg"))
        base = f"{edge.url}/{{}}/{fan_out(image_id)}/{image_id}.jpg"
        client = {"X-Forwarded-For": "203.0.113.5"}
        status, headers, _ = await get(session, base.format("236x"), **client)
        assert status == 200
        # A variant response is cached by CDNs for a year: no per-client headers on it.
        assert "RateLimit" not in headers
        for _ in range(3):  # hits: L1 now
            assert (await get(session, base.format("236x"), **client))[0] == 200
        assert (await get(session, base.format("474x"), **client))[0] == 200
        assert edge.renders == 2

        status, headers, body = await get(session, base.format("736x"), **client)
        assert status == 429, body
        assert b'"rate-limit-exceeded"' in body
        assert headers["Cache-Control"] == "no-store"
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert headers["RateLimit-Policy"] == '"renders-per-address";q=2;w=60'
        assert headers["RateLimit"].startswith('"renders-per-address";r=0;t=')
        assert edge.renders == 2

        # Another client behind the same proxy has its own quota; hits still serve.
        other = {"X-Forwarded-For": "203.0.113.6"}
        assert (await get(session, base.format("736x"), **other))[0] == 200
        assert (await get(session, base.format("236x"), **client))[0] == 200
        assert edge.renders == 3
