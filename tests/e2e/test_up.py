"""The same pipeline against `pinhole up` on the embedded defaults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.photos import upload_set
from tests.support.pipeline import upload_all_and_verify, verify_bad_edge_urls, verify_bad_inputs
from tests.support.processes import PinholeProcess, start_pinhole

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PinholeProcess, Path]]:
    workdir = tmp_path_factory.mktemp("up")
    # No PINHOLE_* settings: the embedded defaults are what is under test.
    process = start_pinhole("up", {}, workdir, cwd=workdir)
    try:
        yield process, workdir
    finally:
        process.stop()


async def test_up_runs_the_whole_pipeline_on_embedded_defaults(
    up: tuple[PinholeProcess, Path], session: aiohttp.ClientSession
) -> None:
    process, workdir = up
    manifests = await upload_all_and_verify(session, process.url, upload_set(), token=None)
    await verify_bad_edge_urls(session, process.url, manifests[0]["id"])
    await verify_bad_inputs(session, process.url, None, upload_set()[0])
    # Embedded default storage: ./var/pinhole under the working directory.
    image_id = manifests[0]["id"]
    fan = f"{image_id[0:2]}/{image_id[2:4]}/{image_id[4:6]}"
    assert (workdir / "var/pinhole/manifests" / fan / f"{image_id}.json").is_file()
    assert (workdir / "var/pinhole/originals" / fan / image_id).is_file()
    async with session.get(f"{process.url}/") as resp:
        assert resp.status == 200
        assert "<h1>Pinhole</h1>" in await resp.text()
    async with session.get(f"{process.url}/readyz") as resp:
        assert resp.status == 200
    assert process.proc.poll() is None, process.log_tail()
