"""The broker loses its log while uploads wait: pending work heals with no operator.

Real processes on real services: one ``pinhole ingest`` and two
``pinhole transcode`` on a Kafka-protocol broker (tansu, memory storage, so a
restart on the same port is a broker that lost its log) and an S3 server
(moto). The transcoders are paused (SIGSTOP) while images are uploaded, so
their jobs exist only in the broker's memory; the broker then goes down for a
while, with every process running into the outage, and comes back empty. Nobody
runs ``pinhole reconcile``: the transcoders' periodic reconcile must find the
pending images, recreate the topics, publish their jobs again and render them;
``pinhole_pending_oldest_seconds`` must show the wait and then fall to 0; and
the outage must cost each process a bounded number of log lines.

A second test runs ``pinhole reconcile`` itself against a broker restarted
empty a moment before: its first run must succeed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pyvips

from ingest.auth import token_digest
from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import ImageId
from pinhole.domain.manifest import Manifest, Status
from pinhole.manifests import load_manifest
from pinhole.ports import BlobStore
from tests.support.processes import PinholeProcess, start_pinhole
from tests.support.services import MotoS3, TansuBroker, free_port, start_tansu
from tests.support.workers import wait_for_assignment

pytestmark = pytest.mark.slow

TOKEN = "log-loss-token"
PARTITIONS = 2
SESSION_MS = 3000
OUTAGE_SECONDS = 15.0
# Warning and error lines one process may write from the broker's loss to full
# recovery. Each distinct condition is logged once and then at most every 30 s:
# about 16 per transcoder here, a few more on a slow machine. Unthrottled,
# aiokafka's reconnect noise alone was 900 to 1,500 per transcoder.
MAX_OUTAGE_LINES = 80
_AGE = re.compile(r"^pinhole_pending_oldest_seconds (\S+)$", re.MULTILINE)
_COUNT = re.compile(r"^pinhole_pending_images (\S+)$", re.MULTILINE)


@dataclass
class Rig:
    env: dict[str, str]
    store: BlobStore
    logs: Path
    broker: TansuBroker
    processes: list[PinholeProcess]

    def start(self, role: str) -> PinholeProcess:
        process = start_pinhole(role, self.env, self.logs)
        self.processes.append(process)
        return process

    def restart_broker(self) -> None:
        self.broker = start_tansu(self.broker.port)


@pytest.fixture
async def rig(moto_s3: MotoS3, unique_name: str, tmp_path: Path) -> AsyncIterator[Rig]:
    name = unique_name.replace("_", "-")[:50]
    broker = start_tansu(free_port())
    storage = moto_s3.url(name)
    env = {
        "PINHOLE_STORAGE": storage,
        "PINHOLE_QUEUE": broker.url,
        "PINHOLE_AUTH__TOKEN_SHA256": f'["{token_digest(TOKEN)}"]',
        "PINHOLE_KAFKA__JOBS_TOPIC": f"{name}.jobs",
        "PINHOLE_KAFKA__EVENTS_TOPIC": f"{name}.events",
        "PINHOLE_KAFKA__DEAD_LETTER_TOPIC": f"{name}.dlq",
        "PINHOLE_KAFKA__CONSUMER_GROUP": f"{name}-transcoder",
        "PINHOLE_KAFKA__PARTITIONS": str(PARTITIONS),
        "PINHOLE_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_MS),
        # Re-enqueue what has been pending for 3 s, looking every 2 s (the
        # production defaults are minutes: see pinhole/settings.py).
        "PINHOLE_RECONCILE_AFTER_SECONDS": "3",
        "PINHOLE_RECONCILE__INTERVAL_SECONDS": "2",
        "PINHOLE_TRANSCODE__AVIF_EFFORT": "0",
        "PINHOLE_TRANSCODE__WEBP_EFFORT": "0",
        "PINHOLE_TRANSCODE__RENDER_THREADS": "1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    rig = Rig(env, build_blob_store(storage), logs, broker, [])
    try:
        yield rig
    finally:
        for process in rig.processes:
            if process.proc.poll() is None:
                os.kill(process.proc.pid, signal.SIGCONT)
                process.proc.kill()
                process.proc.wait()
        rig.broker.stop()
        await rig.store.close()


def _jpeg(seed: int) -> bytes:
    image = (pyvips.Image.xyz(96, 64)[0] * (seed + 1) % 256).cast("uchar")
    data: bytes = image.bandjoin([image, image]).write_to_buffer(".jpg")
    return data


async def _upload(session: aiohttp.ClientSession, ingest: PinholeProcess, data: bytes) -> ImageId:
    headers = {"Content-Type": "image/jpeg", "Authorization": f"Bearer {TOKEN}"}
    async with session.post(f"{ingest.url}/v1/images", data=data, headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        return ImageId((await resp.json())["id"])


async def _manifests(store: BlobStore, ids: list[ImageId]) -> list[Manifest | None]:
    return list(await asyncio.gather(*(load_manifest(store, i) for i in ids)))


async def _gauges(session: aiohttp.ClientSession, process: PinholeProcess) -> tuple[float, float]:
    async with session.get(f"{process.url}/metrics") as resp:
        text = await resp.text()
    age, count = _AGE.search(text), _COUNT.search(text)
    # Missing gauges read as NaN: never 0, never above a bound.
    return (
        float(age.group(1)) if age else math.nan,
        float(count.group(1)) if count else math.nan,
    )


def _complaints(process: PinholeProcess) -> list[str]:
    """Warning and error lines, and anything that is not a JSON line (a traceback)."""
    out = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{") or json.loads(line)["level"] in ("warning", "error"):
            out.append(line)
    return out


async def test_pending_uploads_heal_after_the_broker_loses_its_log(rig: Rig) -> None:
    ingest = rig.start("ingest")
    workers = [rig.start("transcode"), rig.start("transcode")]
    await wait_for_assignment(workers, PARTITIONS)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        # Workers paused: the jobs of these uploads exist only in the broker's memory.
        for worker in workers:
            os.kill(worker.proc.pid, signal.SIGSTOP)
        ids = [await _upload(session, ingest, _jpeg(seed)) for seed in range(6)]
        before = {p.log_path: len(_complaints(p)) for p in rig.processes}
        rig.broker.stop()
        for worker in workers:
            os.kill(worker.proc.pid, signal.SIGCONT)
        # Every process runs into the outage.
        await asyncio.sleep(OUTAGE_SECONDS)
        rig.restart_broker()

        oldest_seen = 0.0
        deadline = time.monotonic() + 120
        while True:
            for worker in workers:
                assert worker.proc.poll() is None, worker.log_tail()
                age, _count = await _gauges(session, worker)
                oldest_seen = max(oldest_seen, age)
            manifests = await _manifests(rig.store, ids)
            if all(m is not None and m.status is Status.READY for m in manifests):
                break
            assert time.monotonic() < deadline, (
                f"still pending: {[m.status.value if m else None for m in manifests]}\n"
                + "\n---\n".join(w.log_tail(20) for w in workers)
            )
            await asyncio.sleep(0.5)
        # The gauge saw the wait (the uploads had waited through the outage)...
        assert oldest_seen >= OUTAGE_SECONDS, oldest_seen
        # ...and falls to 0 once the next pass finds nothing pending.
        async with asyncio.timeout(60):
            while True:
                gauges = [await _gauges(session, w) for w in workers]
                if all(g == (0.0, 0.0) for g in gauges):
                    break
                await asyncio.sleep(0.5)

    for process in rig.processes:
        complaints = _complaints(process)[before[process.log_path] :]
        assert len(complaints) <= MAX_OUTAGE_LINES, (
            f"{process.role} wrote {len(complaints)} warnings and errors:\n"
            + "\n".join(complaints[-60:])
        )
        assert "Traceback" not in process.log_path.read_text(), process.log_tail(60)
        assert process.proc.poll() is None


async def test_a_reconcile_started_while_the_broker_restarts_succeeds_once_it_answers(
    rig: Rig,
) -> None:
    ingest = rig.start("ingest")
    async with aiohttp.ClientSession() as session:
        ids = [await _upload(session, ingest, _jpeg(seed + 20)) for seed in range(4)]
    assert len(set(ids)) == 4
    # The operator's reconcile starts while the broker is still coming back, and
    # meets an empty one without topics.
    rig.broker.stop()
    command = asyncio.create_task(
        asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "pinhole.app.cli", "reconcile", "--older-than", "0"],
            env={**os.environ, **rig.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    )
    await asyncio.sleep(3)
    rig.restart_broker()
    done = await command
    assert done.returncode == 0, done.stderr[-3000:]
    assert "requeued 4," in done.stdout, done.stdout
