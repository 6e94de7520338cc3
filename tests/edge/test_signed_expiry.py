"""Expiring signed URLs on a real edge: ``/s/<sig>/e<unix-seconds>/<w>x<h>/...``.

Served before the expiry with a Cache-Control no longer than the life left,
refused with ``403 signature-expired`` after it (past the skew allowance) before
any tier is looked at, a tampered expiry fails the signature, and URLs without an
expiry are served as they always were. ``pinhole sign --expires-in`` prints a URL
this edge accepts. Expiries in the past stand in for waiting."""

from __future__ import annotations

import datetime
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from pinhole.domain.ids import ImageId
from pinhole.domain.keys import fan_out
from pinhole.domain.ladder import Format
from pinhole.domain.manifest import Status
from server.signing import sign_path, signed_tail
from tests.support.clirun import run_pinhole
from tests.support.edge import RunningEdge, edge_settings, get, running_edge
from tests.support.photos import Photo, load_photo
from tests.support.seed import seed_image

KEY = "expiry-key"
YEAR = 31536000
_MAX_AGE = re.compile(r"public, max-age=([0-9]+)")


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[RunningEdge]:
    async with running_edge(edge_settings(tmp_path, signing_keys=[KEY])) as running:
        yield running


@pytest.fixture(scope="module")
def photo() -> Photo:
    return load_photo("autumn-2560x1600.jpg")


def _path(image_id: ImageId, expires: int | None, fmt: Format | None = Format.WEBP) -> str:
    return sign_path(KEY, signed_tail(300, 200, "fit", image_id, fmt, expires))


def _max_age(cache_control: str) -> int:
    match = _MAX_AGE.fullmatch(cache_control)
    assert match is not None, cache_control
    return int(match.group(1))


async def _expect_error(session: aiohttp.ClientSession, url: str, status: int, code: str) -> None:
    got, headers, body = await get(session, url)
    assert got == status, (url, body)
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "no-store"
    assert f'"{code}"'.encode() in body, body


async def test_an_expiring_url_is_served_until_its_expiry_and_cached_no_longer(
    edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo)
    url = edge.url + _path(image_id, int(time.time()) + 600)
    status, headers, body = await get(session, url)
    assert status == 200, body
    assert headers["Content-Type"] == "image/webp"
    assert 590 <= _max_age(headers["Cache-Control"]) <= 600
    # 304 and 206 repeat the bounded policy, never the year of an immutable variant.
    status, revalidated, _ = await get(session, url, **{"If-None-Match": headers["ETag"]})
    assert status == 304
    assert 590 <= _max_age(revalidated["Cache-Control"]) <= 600
    status, partial, chunk = await get(session, url, Range="bytes=0-9")
    assert (status, chunk) == (206, body[:10])
    assert 590 <= _max_age(partial["Cache-Control"]) <= 600
    async with session.head(url) as resp:
        assert resp.status == 200
        assert 590 <= _max_age(resp.headers["Cache-Control"]) <= 600
    # Far off: capped at the year every variant gets.
    status, headers, _ = await get(session, edge.url + _path(image_id, int(time.time()) + 5 * YEAR))
    assert (status, headers["Cache-Control"]) == (200, f"public, max-age={YEAR}")
    # Negotiated: Vary as for any signed URL, and the bound still holds.
    url = edge.url + _path(image_id, int(time.time()) + 120, fmt=None)
    status, headers, _ = await get(session, url, Accept="image/avif,*/*")
    assert (status, headers["Content-Type"], headers["Vary"]) == (200, "image/avif", "Accept")
    assert 110 <= _max_age(headers["Cache-Control"]) <= 120


async def test_a_pending_images_answer_is_cached_no_longer_than_the_url_lives(
    edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo, status=Status.PENDING)
    now = int(time.time())
    for expires, policies in (
        (None, {"public, max-age=5"}),
        (now + 600, {"public, max-age=5"}),
        # Three seconds left: the five seconds of a pending answer would outlive it.
        (now + 3, {"public, max-age=2", "public, max-age=3"}),
        (now - 10, {"no-store"}),  # within the skew allowance
    ):
        status, headers, body = await get(session, edge.url + _path(image_id, expires))
        assert status == 404, body
        assert b'"image-pending"' in body
        assert headers["Cache-Control"] in policies, (expires, headers["Cache-Control"])
    assert edge.renders == 0


async def test_every_expiry_of_a_rendition_shares_one_render_with_its_plain_url(
    edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo)
    now = int(time.time())
    bodies = set()
    for expires in (None, now + 60, now + 3600, now + 86400):
        status, _, body = await get(session, edge.url + _path(image_id, expires))
        assert status == 200, body
        bodies.add(body)
    assert len(bodies) == 1
    assert edge.renders == 1


def _spy(target: object, name: str, calls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    original: Callable[..., Any] = getattr(target, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, spy)


async def test_an_expired_url_is_refused_before_any_tier_or_storage_read(
    edge: RunningEdge,
    session: aiohttp.ClientSession,
    photo: Photo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image_id = await seed_image(edge.components.store, photo)
    # The rendition is hot in L1 and the hot cache under rendition_key, which has
    # no expiry in it: only a check ahead of the tiers can refuse the expired URL.
    status, _, _ = await get(session, edge.url + _path(image_id, None))
    assert status == 200
    assert edge.renders == 1
    calls: list[str] = []
    tiers, facts = edge.state.tiers, edge.state.facts
    for name in ("get", "get_l1", "get_below_l1"):
        _spy(tiers, name, calls, monkeypatch)
    _spy(facts, "get", calls, monkeypatch)
    expired = int(time.time()) - 3600
    await _expect_error(session, edge.url + _path(image_id, expired), 403, "signature-expired")
    async with session.head(edge.url + _path(image_id, expired)) as resp:
        assert (resp.status, resp.headers["Cache-Control"]) == (403, "no-store")
    assert calls == []
    assert edge.renders == 1
    # The spies do see a valid URL's lookups, so their silence above means something.
    status, _, _ = await get(session, edge.url + _path(image_id, int(time.time()) + 60))
    assert status == 200
    assert "get_l1" in calls


async def test_the_skew_allowance_accepts_a_url_just_past_its_expiry(
    tmp_path: Path, edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo)
    assert edge.state.cfg.signature_skew_seconds == 30
    now = int(time.time())
    # 10 s past its expiry, within the default 30 s: served, but no cache may keep it.
    status, headers, body = await get(session, edge.url + _path(image_id, now - 10))
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    # Past the allowance: refused.
    await _expect_error(session, edge.url + _path(image_id, now - 60), 403, "signature-expired")
    # With no allowance, the same 10 s are too many; a longer one takes 60 s.
    for skew, served in ((0, False), (120, True)):
        settings = edge_settings(
            tmp_path / f"skew-{skew}", signing_keys=[KEY], signature_skew_seconds=skew
        )
        async with running_edge(settings) as other:
            await seed_image(other.components.store, photo)
            for ago in (10, 60):
                url = other.url + _path(image_id, now - ago)
                if served:
                    status, headers, _ = await get(session, url)
                    assert (status, headers["Cache-Control"]) == (200, "no-store")
                else:
                    await _expect_error(session, url, 403, "signature-expired")


async def test_a_tampered_or_malformed_expiry_is_refused(
    edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo)
    fan = fan_out(image_id)
    expired = int(time.time()) - 3600
    path = _path(image_id, expired)
    sig = path.split("/")[2]
    plain = _path(image_id, None)
    plain_sig = plain.split("/")[2]
    later = int(time.time()) + 3600
    for tampered in (
        path.replace(f"/e{expired}/", f"/e{later}/"),  # extended
        path.replace(f"/e{expired}/", f"/e0{expired}/"),  # another spelling
        path.replace(f"/e{expired}/", "/"),  # dropped
        f"/s/{plain_sig}/e{later}/300x200/fit/{fan}/{image_id}.webp",  # added to a plain URL
        f"/s/{sig}/e{later}/300x200/fit/{fan}/{image_id}.webp",
    ):
        await _expect_error(session, edge.url + tampered, 403, "bad-signature")
    # Validly signed but not e<unix-seconds>: 400, before any work.
    for segment in ("e0123", "eabc", "e", "x123", "e1234567890123"):
        bad = sign_path(KEY, f"/{segment}/300x200/fit/{fan}/{image_id}.webp")
        await _expect_error(session, edge.url + bad, 400, "bad-request")
    assert edge.renders == 0


async def test_urls_without_an_expiry_are_unchanged(
    edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo)
    tail = signed_tail(300, 200, "fit", image_id, Format.WEBP)
    assert tail == f"/300x200/fit/{fan_out(image_id)}/{image_id}.webp"
    status, headers, _ = await get(session, edge.url + sign_path(KEY, tail))
    assert (status, headers["Cache-Control"]) == (200, "public, max-age=31536000, immutable")


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINHOLE_")}
    env["PINHOLE_EDGE__SIGNING_KEYS"] = f'["{KEY}"]'
    env["PINHOLE_STORAGE"] = f"file://{tmp_path / 'cli-blobs'}"
    return env


async def test_pinhole_sign_prints_an_expiring_url_the_edge_accepts(
    tmp_path: Path, edge: RunningEdge, session: aiohttp.ClientSession, photo: Photo
) -> None:
    image_id = await seed_image(edge.components.store, photo)
    env = _cli_env(tmp_path)
    base = ["sign", image_id, "300x200", "--format", "webp"]

    before = int(time.time())
    signed = await run_pinhole([*base, "--expires-in", "600"], env, within_seconds=60)
    assert signed.returncode == 0, signed
    path = urlsplit(signed.stdout.strip()).path
    match = re.fullmatch(r"/s/[A-Za-z0-9_-]{43}/e([0-9]+)/300x200/fit/.+\.webp", path)
    assert match is not None, path
    assert before + 600 <= int(match.group(1)) <= int(time.time()) + 600
    status, headers, body = await get(session, edge.url + path)
    assert status == 200, body
    assert 590 <= _max_age(headers["Cache-Control"]) <= 600

    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)
    at = await run_pinhole([*base, "--expires-at", when.isoformat()], env, within_seconds=60)
    assert at.returncode == 0, at
    path = urlsplit(at.stdout.strip()).path
    assert f"/e{int(when.timestamp())}/" in path
    status, headers, _ = await get(session, edge.url + path)
    assert status == 200
    assert 7190 <= _max_age(headers["Cache-Control"]) <= 7200

    # Without either flag the CLI prints exactly the URL it always printed.
    plain = await run_pinhole(base, env, within_seconds=60)
    assert plain.returncode == 0, plain
    assert urlsplit(plain.stdout.strip()).path == _path(image_id, None)

    # A preset: the signed ladder URL a private image needs, which always expires.
    ladder_args = ["sign", image_id, "236x", "--format", "webp", "--expires-in", "600"]
    ladder = await run_pinhole(ladder_args, env, within_seconds=60)
    assert ladder.returncode == 0, ladder
    path = urlsplit(ladder.stdout.strip()).path
    fan = f"{image_id[:2]}/{image_id[2:4]}/{image_id[4:6]}"
    match = re.fullmatch(rf"/s/[A-Za-z0-9_-]{{43}}/e([0-9]+)/236x/{fan}/{image_id}\.webp", path)
    assert match is not None, path
    status, headers, body = await get(session, edge.url + path)
    assert status == 200, body
    assert headers["Content-Type"] == "image/webp"
    forever = await run_pinhole(["sign", image_id, "236x"], env, within_seconds=60)
    assert forever.returncode != 0, forever
    assert forever.stdout == "", forever

    for bad in (
        ["--expires-in", "0"],
        ["--expires-at", "2001-01-01T00:00:00Z"],
        ["--expires-at", "2030-01-01T00:00:00"],  # no offset: whose midnight?
        ["--expires-in", "60", "--expires-at", "2030-01-01T00:00:00Z"],
    ):
        refused = await run_pinhole([*base, *bad], env, within_seconds=60)
        assert refused.returncode != 0, (bad, refused)
        assert refused.stdout == "", (bad, refused)
