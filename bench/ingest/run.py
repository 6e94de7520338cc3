"""Ingest throughput and memory: uploads/s and latency for ~500 KB photos at
concurrency 16, and peak RSS while one 200 MB body streams through.

    .venv/bin/python -m bench.ingest.run [--seconds 20] [--concurrency 16]

``pinhole ingest`` runs as its own process against a real Kafka-protocol broker
(tansu) and a real S3-protocol server (moto, also its own process), exactly as
in production but on one machine: the load generator, ingest, moto and tansu
all share its cores, and the table says how many there are.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pyvips

from tests.support.photos import photo_path
from tests.support.processes import PinholeProcess, start_pinhole
from tests.support.services import free_port, start_tansu, stop_process, wait_for_port

MIB = 1024 * 1024
TARGET_BYTES = 500_000
BIG_BODY_BYTES = 200 * MIB


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def photo_near(target: int) -> bytes:
    """A real photograph re-encoded to about ``target`` bytes."""
    source = pyvips.Image.new_from_file(str(photo_path("autumn-2560x1600.jpg")))
    best = b""
    for width in (2560, 2200, 1900, 1600, 1400, 1200, 1000):
        data: bytes = source.thumbnail_image(width).write_to_buffer(".jpg", Q=85)
        best = data
        if len(data) <= target:
            break
    return best


def unique(photo: bytes, n: int) -> bytes:
    """The same picture with a different COM segment: different bytes, different id."""
    comment = f"pinhole bench {n}".encode()
    return photo[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + photo[2:]


@contextmanager
def moto_process() -> Iterator[str]:
    """moto's S3 server in its own process, so it does not share the load generator's GIL."""
    port = free_port()
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if binary is None:
        raise RuntimeError("moto_server is missing; run `make test`, which installs it")
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@dataclass
class Throughput:
    uploads: int
    seconds: float
    errors: int
    latencies: list[float]
    bytes_sent: int

    @property
    def per_second(self) -> float:
        return self.uploads / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def load(url: str, photo: bytes, seconds: float, concurrency: int, start: int) -> Throughput:
    latencies: list[float] = []
    errors = 0
    sent = 0
    counter = iter(range(start, 10**9))
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors, sent
        while time.perf_counter() < deadline:
            body = unique(photo, next(counter))
            began = time.perf_counter()
            async with session.post(
                f"{url}/v1/images", data=body, headers={"Content-Type": "image/jpeg"}
            ) as resp:
                await resp.read()
                if resp.status != 202:
                    errors += 1
                    continue
            latencies.append(time.perf_counter() - began)
            sent += len(body)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return Throughput(len(latencies), elapsed, errors, latencies, sent)


async def big_body(url: str, pid: int) -> tuple[int, int, int, float]:
    """Stream a 200 MB JPEG (a small real one with 200 MB of scan data inside):
    status, peak RSS before and after, seconds."""
    small: bytes = pyvips.Image.black(64, 48).write_to_buffer(".jpg")
    head, tail = small[:-2], small[-2:]  # everything up to EOI, then EOI

    async def body() -> AsyncIterator[bytes]:
        yield head
        chunk = b"\x00" * MIB
        for _ in range(BIG_BODY_BYTES // MIB):
            yield chunk
        yield tail

    before = peak_rss(pid)
    began = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=300)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(f"{url}/v1/images", data=body(), headers={"Content-Type": "image/jpeg"}) as r,
    ):
        await r.read()
        status = r.status
    return status, before, peak_rss(pid), time.perf_counter() - began


def _env(s3: str, bucket: str, broker: str, **extra: str) -> dict[str, str]:
    return {
        "PINHOLE_STORAGE": f"s3://{bucket}?endpoint={s3}&region=us-east-1",
        "PINHOLE_QUEUE": broker,
        "PINHOLE_AUTH__ALLOW_ANONYMOUS": "true",
        "PINHOLE_KAFKA__PARTITIONS": "4",
        "PINHOLE_LOG_LEVEL": "WARNING",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **extra,
    }


async def main(seconds: float, concurrency: int) -> None:
    photo = photo_near(TARGET_BYTES)
    logs = Path(tempfile.mkdtemp(prefix="pinhole-bench-ingest-"))
    broker = start_tansu()
    processes: list[PinholeProcess] = []
    try:
        with moto_process() as s3:
            ingest = start_pinhole("ingest", _env(s3, "bench-ingest", broker.url), logs)
            processes.append(ingest)
            await load(ingest.url, photo, 3, concurrency, start=0)  # warm-up
            result = await load(ingest.url, photo, seconds, concurrency, start=10**6)
            ingest.stop()

            big_limit = str(BIG_BODY_BYTES + MIB)
            env = _env(
                s3, "bench-ingest-big", broker.url, PINHOLE_LIMITS__MAX_UPLOAD_BYTES=big_limit
            )
            ingest = start_pinhole("ingest", env, logs)
            processes.append(ingest)
            await load(ingest.url, photo, 2, 4, start=2 * 10**6)  # warm-up: every client loaded
            status, before, after, big_seconds = await big_body(ingest.url, ingest.proc.pid)
            ingest.stop()
    finally:
        for process in processes:
            process.stop()
        broker.stop()
        shutil.rmtree(logs, ignore_errors=True)

    cores = os.cpu_count()
    print()
    print(
        f"Ingest, {len(photo) // 1000} KB JPEG photos, concurrency {concurrency}, "
        f"{result.seconds:.0f} s; `pinhole ingest` + tansu + moto + load generator "
        f"on one {cores}-core machine, shared with other engineers' test runs."
    )
    print()
    print("| uploads/s | MB/s in | p50 ms | p99 ms | errors |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {result.per_second:.0f} | {result.bytes_sent / result.seconds / 1e6:.1f} "
        f"| {result.percentile(50):.0f} | {result.percentile(99):.0f} | {result.errors} |"
    )
    print()
    print(f"Streaming one {BIG_BODY_BYTES // MIB} MB body (limit raised for the run):")
    print()
    print("| status | peak RSS before | peak RSS after | growth | seconds |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {status} | {before / MIB:.0f} MiB | {after / MIB:.0f} MiB "
        f"| {(after - before) / MIB:.0f} MiB | {big_seconds:.1f} |"
    )
    if statistics.mean(result.latencies or [0]) == 0 or status != 202:
        sys.exit("bench run failed: see the tables")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.concurrency))
