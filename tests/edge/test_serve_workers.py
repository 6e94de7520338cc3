"""`pinhole serve --workers N`: N processes share one port and stop cleanly."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from pinhole.app.wiring import build_blob_store
from tests.support.photos import load_photo
from tests.support.processes import PinholeProcess, wait_healthy
from tests.support.seed import seed_image
from tests.support.services import free_port

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in out.stdout.split()]


def _start(store_dir: Path, log_path: Path, workers: int) -> PinholeProcess:
    port = free_port()
    env = {**os.environ, "PINHOLE_STORAGE": f"file://{store_dir}"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the supervisor makes one for its children
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pinhole.app.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return PinholeProcess(port, proc, log_path, role="serve")


async def _until_listening(process: PinholeProcess, workers: int) -> None:
    """Healthy means one child answers; wait for every child to say it listens."""
    for _ in range(600):
        if process.log_tail(1000).count('"msg": "listening"') >= workers:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(process.log_tail())


def _gone(pids: list[int]) -> bool:
    return all(not Path(f"/proc/{pid}").exists() for pid in pids)


async def test_serve_with_two_workers_shares_the_port(tmp_path: Path) -> None:
    store = build_blob_store(f"file://{tmp_path / 'store'}")
    image_id = await seed_image(store, load_photo("flow-dark-720x1440-portrait.jpg"))
    await store.close()
    log_path = tmp_path / "serve.log"
    process = _start(tmp_path / "store", log_path, workers=2)
    proc = process.proc
    try:
        wait_healthy(process)
        children = _children(proc.pid)
        assert len(children) == 2, process.log_tail()
        await _until_listening(process, 2)
        fan = f"{image_id[0:2]}/{image_id[2:4]}/{image_id[4:6]}"
        url = f"{process.url}/236x/{fan}/{image_id}.webp"
        async with aiohttp.ClientSession() as session:

            async def fetch() -> tuple[int, bytes]:
                # A new connection each time, so the kernel spreads them over both.
                async with session.get(url, headers={"Connection": "close"}) as resp:
                    return resp.status, await resp.read()

            replies = await asyncio.gather(*(fetch() for _ in range(40)))
            assert {status for status, _ in replies} == {200}
            assert len({body for _, body in replies}) == 1
            async with session.get(f"{process.url}/metrics") as resp:
                assert resp.status == 200
                assert "pinhole_" in await resp.text()
    finally:
        code = process.stop()
    assert code == 0, process.log_tail()
    assert _gone(children)
    assert "Traceback" not in process.log_tail(1000)
