"""Transcoder throughput with one, two and three ``pinhole transcode`` processes
in one consumer group: images/s and the ratio against one process.

    .venv/bin/python -m bench.transcoders.run [--photos 36]

Real processes over a real Kafka-protocol broker (tansu) and a real S3 server
(moto, its own process): ``pinhole ingest`` takes the uploads over HTTP, the
transcoders render the full default ladder (15 variants) of real photographs.
For each process count the group first settles (every member holds partitions),
then the photos are uploaded, and the clock runs from the first upload to the
last "image ready" any worker logs (the batch's drain time). Jobs go to
partitions by image-id hash, so with a few dozen photos one worker may get
more than its share and finish last; the headline rate is therefore counted
while every process still had work: images rendered up to the moment the first
worker finished its last one, over the time since the first upload.

Two configurations: the worker's defaults (encode threads and libvips threads
per core, two jobs in flight) and one thread per process, which shows what each
process adds when it brings a core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.ingest.run import moto_process, unique
from tests.support.photos import photo_path
from tests.support.processes import PinholeProcess, start_pinhole
from tests.support.services import start_tansu
from tests.support.workers import ready_times, wait_for_assignment

PHOTOS = ("autumn-2560x1600.jpg", "pastelhills-3200x2000.jpg", "flow-dark-720x1440-portrait.jpg")
PARTITIONS = 12  # the default; divisible by 1, 2 and 3: every member gets as many
CONFIGS = {
    "worker defaults": {},
    "one thread per process": {
        "PINHOLE_TRANSCODE__RENDER_THREADS": "1",
        "PINHOLE_TRANSCODE__VIPS_THREADS_PER_OP": "1",
        "PINHOLE_TRANSCODE__MAX_IN_FLIGHT": "1",
    },
}


@dataclass
class Run:
    config: str
    processes: int
    photos: int
    seconds: float  # first upload to last image ready
    busy_images: int  # rendered while every process still had work
    busy_seconds: float

    @property
    def per_second(self) -> float:
        return self.busy_images / self.busy_seconds


def _env(s3: str, broker: str, name: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        "PINHOLE_STORAGE": f"s3://{name}?endpoint={s3}&region=us-east-1",
        "PINHOLE_QUEUE": broker,
        "PINHOLE_AUTH__ALLOW_ANONYMOUS": "true",
        "PINHOLE_KAFKA__JOBS_TOPIC": f"{name}.jobs",
        "PINHOLE_KAFKA__EVENTS_TOPIC": f"{name}.events",
        "PINHOLE_KAFKA__DEAD_LETTER_TOPIC": f"{name}.dlq",
        "PINHOLE_KAFKA__CONSUMER_GROUP": f"{name}-transcoder",
        "PINHOLE_KAFKA__PARTITIONS": str(PARTITIONS),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **extra,
    }


def _bodies(count: int, offset: int) -> list[bytes]:
    """``count`` distinct uploads (distinct ids) cycling over the real photos."""
    sources = [photo_path(name).read_bytes() for name in PHOTOS]
    return [unique(sources[i % len(sources)], offset + i) for i in range(count)]


async def _upload_all(url: str, bodies: list[bytes]) -> None:
    slots = asyncio.Semaphore(8)  # below ingest's upload slots: no 429s

    async def one(session: aiohttp.ClientSession, body: bytes) -> None:
        async with (
            slots,
            session.post(
                f"{url}/v1/images", data=body, headers={"Content-Type": "image/jpeg"}
            ) as resp,
        ):
            text = await resp.text()
            if resp.status != 202:
                raise RuntimeError(f"upload answered {resp.status}: {text}")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, body) for body in bodies))


async def _wait_rendered(workers: list[PinholeProcess], count: int) -> list[list[float]]:
    """Each worker's "image ready" times, once ``count`` images are ready in all."""
    deadline = time.monotonic() + 30 * count
    while True:
        times = [ready_times(w) for w in workers]
        if sum(map(len, times)) >= count:
            return times
        for worker in workers:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"transcoder died:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(times)} of {count} rendered")
        await asyncio.sleep(0.2)


async def measure(
    s3: str, broker: str, logs: Path, config: str, processes: int, photos: int, offset: int
) -> Run:
    name = f"bench-tx-{offset}"
    env = _env(s3, broker, name, CONFIGS[config])
    started: list[PinholeProcess] = []
    try:
        ingest = start_pinhole("ingest", {**env, "PINHOLE_LOG_LEVEL": "WARNING"}, logs)
        started.append(ingest)
        workers = [start_pinhole("transcode", env, logs) for _ in range(processes)]
        started += workers
        await wait_for_assignment(workers, PARTITIONS)
        bodies = _bodies(photos, offset)
        began = time.time()
        await _upload_all(ingest.url, bodies)
        times = await _wait_rendered(workers, photos)
        everyone_busy_until = min(max(t, default=began) for t in times)
        busy = sum(1 for worker in times for t in worker if t <= everyone_busy_until)
        drained = max(t for worker in times for t in worker)
        return Run(config, processes, photos, drained - began, busy, everyone_busy_until - began)
    finally:
        for process in started:
            process.stop()


async def main(photos: int) -> None:
    logs = Path(tempfile.mkdtemp(prefix="pinhole-bench-transcoders-"))
    broker = start_tansu()
    load_before = os.getloadavg()[0]
    runs: list[Run] = []
    try:
        with moto_process() as s3:
            for number, config in enumerate(CONFIGS):
                for processes in (1, 2, 3):
                    offset = (number * 3 + processes) * 10_000
                    run = await measure(s3, broker.url, logs, config, processes, photos, offset)
                    print(f"  {config}, {processes} process(es): {run.per_second:.2f} images/s")
                    runs.append(run)
    finally:
        broker.stop()
        shutil.rmtree(logs, ignore_errors=True)
    load_after = os.getloadavg()[0]

    print()
    print(
        f"Transcoders, {photos} real photos (cycling {', '.join(PHOTOS)}), full ladder "
        f"(15 variants); ingest + tansu + moto + the transcoders on one "
        f"{os.cpu_count()}-core machine. 1-minute load average {load_before:.2f} before, "
        f"{load_after:.2f} after."
    )
    print()
    print("| configuration | processes | images/s | vs 1 process | batch drained in s |")
    print("|---|---:|---:|---:|---:|")
    for run in runs:
        one = next(r for r in runs if r.config == run.config and r.processes == 1)
        print(
            f"| {run.config} | {run.processes} | {run.per_second:.2f} "
            f"| {run.per_second / one.per_second:.2f}x | {run.seconds:.1f} |"
        )
    print()
    print(json.dumps([run.__dict__ for run in runs]))
    if any(run.per_second <= 0 for run in runs):
        sys.exit("bench run failed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=36)
    args = parser.parse_args()
    asyncio.run(main(args.photos))
