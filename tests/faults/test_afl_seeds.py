"""AFL++'s image testcases, and afl-style mutations of them, through a running
`pinhole up` (ingest, transcoder and edge in one process).

The seeds come from Debian's afl++-doc (scripts/fetch-afl-seeds.sh, run by
`make test`). Formats we accept (JPEG, PNG, GIF, WebP) must be accepted and end
``ready``; the others (BMP, ICO, JPEG 2000, JPEG XR, TIFF) must be refused with
``415``. Each seed is also sent under a wrong Content-Type (the bytes decide),
and mutated the ways AFL's deterministic stages do: truncations, bit flips,
"interesting" byte values, and a duplicated or deleted block. A mutant's fate
is not known in advance, so the rule for those is the contract itself: a
``202``/``200`` that ends ``ready`` or ``failed`` (never stuck ``pending``), or
a 4xx with a JSON code; never a 5xx, and the process stays up.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips

from tests.support import badinput
from tests.support.processes import PinholeProcess, start_pinhole

pytestmark = pytest.mark.slow

SEEDS_DIR = Path(__file__).resolve().parents[2] / ".cache" / "afl-seeds"
ACCEPTED_PREFIXES = ("jpeg-", "png-", "gif-", "webp-")
REFUSED_PREFIXES = ("bmp-", "ico-", "jp2-", "jxr-", "tiff-")
MUTANTS_PER_SEED = 10
SETTLE_SECONDS = 120.0


def seeds() -> dict[str, bytes]:
    if not (SEEDS_DIR / ".complete").is_file():
        raise FileNotFoundError(f"{SEEDS_DIR} is missing: run `make test` (fetch-afl-seeds.sh)")
    return {p.name: p.read_bytes() for p in sorted(SEEDS_DIR.iterdir()) if p.name[0] != "."}


def mutants(data: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    """AFL's deterministic stages in miniature, at seeded random positions."""
    n = len(data)
    out = [(f"truncated-{cut}", data[:cut]) for cut in sorted({n // 4, n // 2, n - 1})]
    for _ in range(3):
        flipped = bytearray(data)
        pos = rng.randrange(n)
        flipped[pos] ^= 1 << rng.randrange(8)
        out.append((f"bitflip-{pos}", bytes(flipped)))
    for value in (0x00, 0xFF, 0x7F):
        interesting = bytearray(data)
        pos = rng.randrange(n)
        interesting[pos] = value
        out.append((f"byte-{pos}={value:#x}", bytes(interesting)))
    start = rng.randrange(n // 2)
    block = data[start : start + 16]
    out.append((f"dup-{start}", data[:start] + block + data[start:]))
    out.append((f"del-{start}", data[:start] + data[start + 16 :]))
    return out[: MUTANTS_PER_SEED + 1]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PinholeProcess]:
    workdir = tmp_path_factory.mktemp("afl-up")
    process = start_pinhole("up", {}, workdir, cwd=workdir)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


async def _post(
    session: aiohttp.ClientSession, url: str, data: bytes, content_type: str
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type}
    async with session.post(f"{url}/v1/images", data=data, headers=headers) as resp:
        body = await resp.read()
        if resp.status >= 400:
            assert resp.headers["Content-Type"].startswith("application/json"), body
            return resp.status, {"code": badinput.error_code(body)}
        reply: dict[str, Any] = await resp.json(content_type=None)
        return resp.status, reply


async def _settle(session: aiohttp.ClientSession, status_url: str) -> dict[str, Any]:
    """The manifest once it leaves ``pending``."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        async with session.get(status_url) as resp:
            assert resp.status == 200, await resp.text()
            manifest: dict[str, Any] = await resp.json()
        if manifest["status"] != "pending":
            return manifest
        assert time.monotonic() < deadline, f"{status_url} still pending"
        await asyncio.sleep(0.2)


async def _fetch_smallest(session: aiohttp.ClientSession, manifest: dict[str, Any]) -> None:
    """A ready image serves a variant that decodes."""
    variant = next(v for v in manifest["variants"] if v["preset"] == "236x")
    async with session.get(variant["url"]) as resp:
        assert resp.status == 200, (variant["url"], await resp.text())
        image = pyvips.Image.new_from_buffer(await resp.read(), "")
        assert image.width == min(236, manifest["width"])


async def test_afl_seeds_are_accepted_or_refused_by_their_bytes(
    up: PinholeProcess, session: aiohttp.ClientSession
) -> None:
    all_seeds = seeds()
    assert {n.split("-")[0] for n in all_seeds} >= {"jpeg", "png", "gif", "webp", "bmp", "tiff"}
    for name, data in all_seeds.items():
        # The label is a lie both ways: bytes decide, and so the answer is the same.
        for content_type in ("image/jpeg", "image/png", "application/octet-stream"):
            status, reply = await _post(session, up.url, data, content_type)
            if name.startswith(REFUSED_PREFIXES):
                assert (status, reply["code"]) == (415, "unsupported-media-type"), name
                continue
            assert name.startswith(ACCEPTED_PREFIXES), name
            assert status in (200, 202), (name, status, reply)
            manifest = await _settle(session, reply["status_url"])
            assert manifest["status"] == "ready", (name, manifest)
            await _fetch_smallest(session, manifest)
    assert up.proc.poll() is None, up.log_tail()


async def test_afl_style_mutants_get_an_answer_and_nothing_is_stuck_or_lost(
    up: PinholeProcess, session: aiohttp.ClientSession
) -> None:
    rng = random.Random(20261122)
    outcomes: dict[str, int] = {}
    accepted: list[tuple[str, str]] = []
    for name, data in seeds().items():
        for how, mutant in mutants(data, rng):
            status, reply = await _post(session, up.url, mutant, "image/jpeg")
            label = f"{name}:{how}"
            assert status < 500, (label, status, reply)
            if status >= 400:
                assert reply["code"], label
                outcomes[reply["code"]] = outcomes.get(reply["code"], 0) + 1
            else:
                assert status in (200, 202), (label, status, reply)
                accepted.append((label, reply["status_url"]))
    for label, status_url in accepted:
        manifest = await _settle(session, status_url)
        outcome = manifest["status"]
        assert outcome in ("ready", "failed"), (label, manifest)
        if outcome == "ready":
            await _fetch_smallest(session, manifest)
        else:
            # Failed in the transcoder (the header passed, the pixels did not):
            # dead-lettered with a stable code, not retried forever.
            assert manifest["failure"]["code"], (label, manifest)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # Both sides of the contract were exercised: some mutants refused at the
    # door, some accepted (a flipped bit in pixel data still decodes).
    assert outcomes.get("ready", 0) > 0, outcomes
    assert sum(n for code, n in outcomes.items() if code not in ("ready", "failed")) > 0, outcomes
    async with session.get(f"{up.url}/healthz") as resp:
        assert resp.status == 200
    assert up.proc.poll() is None, up.log_tail()
