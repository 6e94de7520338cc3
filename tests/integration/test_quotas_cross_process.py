"""Storage quotas hold across ingest processes: two real ``pinhole ingest``
processes share one record store (a real MariaDB server, or one SQLite file)
and one local-disk blob store. Uploads of one owner race through both at once;
exactly what the quota allows gets a record, the rest ``403 quota-exceeded``,
and both processes report the same usage.

The race is what stage 3 (the record store's atomic check) is for: every
upload passes the header check while the owner is below the quota, so only
the store, serialising the owner's creates, keeps the sum within it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips

from ingest.auth import token_digest
from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.keys import original_key, sweep_key
from storage.fs import FsBlobStore
from tests.support.clirun import run_pinhole
from tests.support.mariadb import MariaDbServer
from tests.support.processes import PinholeProcess, start_pinhole

TOKEN = "quota-cross-process-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"}
MAX_IMAGES = 4
RACERS = 16
BYTE_QUOTA = 5000
# Owners with a quota of their own: images only, and bytes only.
COUNTED, WEIGHED = "counted", "weighed"


@dataclass
class Rig:
    a: PinholeProcess
    b: PinholeProcess
    store: Path

    @property
    def both(self) -> tuple[PinholeProcess, PinholeProcess]:
        return self.a, self.b


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp(f"quotas-{request.param}")
    env = {
        "PINHOLE_STORAGE": f"file://{root / 'store'}",
        "PINHOLE_QUEUE": "memory://",
        "PINHOLE_CACHE": "memory://",
        "PINHOLE_AUTH__TOKEN_SHA256": json.dumps([token_digest(TOKEN)]),
        "PINHOLE_QUOTAS__OWNERS": json.dumps(
            {COUNTED: {"max_images": MAX_IMAGES}, WEIGHED: {"max_bytes": BYTE_QUOTA}}
        ),
    }
    if request.param == "mariadb":
        server: MariaDbServer = request.getfixturevalue("mariadb")
        env["PINHOLE_RECORDS"] = server.url(server.create_database())
        upgraded = asyncio.run(run_pinhole(["db", "upgrade"], {**os.environ, **env}))
        assert upgraded.returncode == 0, upgraded
    else:
        env["PINHOLE_RECORDS"] = f"sqlite:///{root / 'records.db'}"
    started: list[PinholeProcess] = []
    try:
        started.append(start_pinhole("ingest", env, root))
        started.append(start_pinhole("ingest", env, root))
        yield Rig(started[0], started[1], store=root / "store")
    finally:
        for process in started:
            process.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


_sizes = iter(range(16, 4000))


def jpeg() -> bytes:
    """A new image each call (noise: a few hundred bytes to a few kilobytes)."""
    width = next(_sizes)
    image = pyvips.Image.gaussnoise(width, 24, sigma=40, mean=128).cast("uchar")
    data: bytes = image.write_to_buffer(".jpg", Q=90)
    return data


async def _upload(
    session: aiohttp.ClientSession, process: PinholeProcess, body: bytes, owner: str
) -> tuple[int, dict[str, Any]]:
    async with session.post(
        f"{process.url}/v1/images", data=body, params={"owner": owner}, headers=AUTH
    ) as resp:
        return resp.status, await resp.json()


async def _usage(
    session: aiohttp.ClientSession, process: PinholeProcess, owner: str
) -> dict[str, Any]:
    async with session.get(f"{process.url}/v1/owners/{owner}/usage", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def _refusals(session: aiohttp.ClientSession, process: PinholeProcess) -> dict[str, float]:
    """``pinhole_quota_refusals_total`` of one process, by "quota/stage"."""
    async with session.get(f"{process.url}/metrics") as resp:
        text = await resp.text()
    found: dict[str, float] = {}
    for quota, stage, value in re.findall(
        r'^pinhole_quota_refusals_total\{quota="(\w+)",stage="(\w+)"\} (\S+)$', text, re.M
    ):
        found[f"{quota}/{stage}"] = float(value)
    return found


async def _race(
    session: aiohttp.ClientSession, rig: Rig, owner: str, bodies: list[bytes]
) -> list[tuple[bytes, int, dict[str, Any]]]:
    answers = await asyncio.gather(
        *(_upload(session, rig.both[n % 2], body, owner) for n, body in enumerate(bodies))
    )
    return [(body, status, answer) for body, (status, answer) in zip(bodies, answers, strict=True)]


async def _refused_sum(session: aiohttp.ClientSession, rig: Rig, quota: str) -> float:
    total = 0.0
    for process in rig.both:
        counts = await _refusals(session, process)
        total += sum(v for k, v in counts.items() if k.startswith(f"{quota}/"))
    return total


async def test_racing_uploads_of_one_owner_through_two_processes_make_exactly_the_quota(
    rig: Rig, session: aiohttp.ClientSession
) -> None:
    before = await _refused_sum(session, rig, "images")
    results = await _race(session, rig, COUNTED, [jpeg() for _ in range(RACERS)])
    accepted = [body for body, status, _ in results if status == 202]
    refused = [answer for _, status, answer in results if status != 202]
    assert len(accepted) == MAX_IMAGES, [(s, a.get("error")) for _, s, a in results]
    assert {a["error"]["code"] for a in refused} == {"quota-exceeded"}, refused
    # Both processes read the same usage from the shared store.
    for process in rig.both:
        seen = await _usage(session, process, COUNTED)
        assert seen["usage"] == {"images": MAX_IMAGES, "bytes": sum(map(len, accepted))}
        assert seen["remaining"]["images"] == 0
    assert await _refused_sum(session, rig, "images") == before + RACERS - MAX_IMAGES
    # An original stored for an upload then refused at commit is marked for the
    # sweep: no refused upload leaves an image that nothing will delete.
    store = FsBlobStore(rig.store)
    for body, status, _ in results:
        if status == 202:
            continue
        image_id = image_id_for_bytes(body)
        if await store.head(original_key(image_id)) is not None:
            assert await store.head(sweep_key(image_id)) is not None, image_id


async def test_racing_uploads_never_take_more_bytes_than_the_quota(
    rig: Rig, session: aiohttp.ClientSession
) -> None:
    bodies = [jpeg() for _ in range(RACERS)]
    assert sum(map(len, bodies)) > 2 * BYTE_QUOTA
    results = await _race(session, rig, WEIGHED, bodies)
    accepted = [body for body, status, _ in results if status == 202]
    refused = [answer for _, status, answer in results if status != 202]
    assert accepted, results
    assert {a["error"]["code"] for a in refused} == {"quota-exceeded"}, refused
    used = sum(map(len, accepted))
    assert used <= BYTE_QUOTA
    for process in rig.both:
        seen = await _usage(session, process, WEIGHED)
        assert seen["usage"] == {"images": len(accepted), "bytes": used}
        assert seen["quota"] == {"max_bytes": BYTE_QUOTA, "max_images": None}
    # What is left is honoured too: the smallest refused upload does not fit it,
    # or fits it now (uploaded again, sequentially, it is accepted).
    smallest = min((b for b, s, _ in results if s != 202), key=len)
    status, answer = await _upload(session, rig.a, smallest, WEIGHED)
    if used + len(smallest) <= BYTE_QUOTA:
        assert status in (200, 202), answer
    else:
        assert (status, answer["error"]["code"]) == (403, "quota-exceeded"), answer
