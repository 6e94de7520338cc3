"""Edge serving throughput with wrk: Pinhole from L1, from Redis, cold from S3
(moto), against nginx serving the same bytes as a static file, in one run.

    .venv/bin/python -m bench.edge.run [--seconds 10] [--connections 64] [--rounds 3]

Every server and wrk share this machine's cores; the table says how many.
The headline pair (nginx, and Pinhole's L1 path on every core) is measured
``--rounds`` times, alternating, and the table shows each one's median round:
on a shared VM one 10-second run of either can be 10-20% off.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pinhole.app.wiring import build_blob_store
from pinhole.domain.keys import variant_key, variant_path
from pinhole.settings import Transcode
from tests.support.photos import Photo, load_photo
from tests.support.processes import PinholeProcess, start_pinhole
from tests.support.seed import seed_image, source_info
from tests.support.services import (
    RedisServer,
    free_port,
    require_binary,
    start_moto,
    start_redis,
    stop_process,
    wait_for_port,
)
from transcoder.vips_engine import VipsEngine

TARGET_BYTES = 50_000


@dataclass
class Row:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(text)
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(name: str, url: str, seconds: int, connections: int) -> Row:
    out = subprocess.run(
        [require_binary("wrk"), "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return Row(name, rps, p50, p99, int(errors.group(1)) if errors else 0)


async def _seed(storage: str, photo: Photo) -> tuple[str, bytes]:
    """Store a ~50 KB variant of a real photo; return its URL path and size."""
    store = build_blob_store(storage)
    try:
        image_id = await seed_image(store, photo)
        rendering = VipsEngine(Transcode()).render_ladder(photo.data, source_info(photo))
        best = min(rendering.variants, key=lambda v: abs(len(v.body) - TARGET_BYTES))
        await store.put(
            variant_key(best.preset, image_id, best.fmt),
            best.body,
            content_type=best.fmt.media_type,
        )
        return variant_path(best.preset, image_id, best.fmt), best.body
    finally:
        await store.close()


def _median(runs: list[Row]) -> Row:
    """The run with the median req/s (its own latencies, not mixed from other runs)."""
    return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


def _nginx_static(root: Path, workdir: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = workdir / f"nginx-{workers}.conf"
    temps = "".join(
        f"  {d}_temp_path {workdir / d};\n"
        for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"{user}daemon off;\nworker_processes {workers};\npid {workdir / f'nginx-{workers}.pid'};\n"
        f"error_log {workdir / 'nginx-error.log'} warn;\nevents {{ worker_connections 4096; }}\n"
        f"http {{\n  access_log off;\n{temps}  sendfile on;\n  tcp_nopush on;\n"
        f"  server {{ listen 127.0.0.1:{port} reuseport; root {root}; }}\n}}\n"
    )
    proc = subprocess.Popen(
        [require_binary("nginx"), "-p", str(workdir), "-c", str(conf)],
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc=proc)
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of nginx vs L1")
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request
    # The photo before any server, and every server stopped in finally: a failure leaks none.
    photo = load_photo("autumn-2560x1600.jpg")
    rows: list[Row] = []
    processes: list[PinholeProcess] = []
    servers: list[subprocess.Popen[bytes]] = []
    moto = start_moto()
    redis: RedisServer | None = None
    try:
        redis = start_redis()
        work = Path(tempfile.mkdtemp(prefix="pinhole-bench-edge-"))
        storage = moto.url("pinhole-bench-edge")
        path, body = asyncio.run(_seed(storage, photo))
        size = len(body)
        base_env = {
            "PINHOLE_STORAGE": storage,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "PINHOLE_LOG_LEVEL": "WARNING",
        }
        setups = {
            "pinhole, L1 hit (1 process)": {"PINHOLE_CACHE": "memory://"},
            "pinhole, Redis hit (1 process, L1 off)": {
                "PINHOLE_CACHE": redis.url,
                "PINHOLE_HOT_CACHE__L1_MAX_BYTES": "0",
            },
            "pinhole, cold from S3/moto (1 process, no cache)": {
                "PINHOLE_CACHE": "memory://",
                "PINHOLE_HOT_CACHE__L1_MAX_BYTES": "0",
            },
        }
        static_root = work / "static"
        for name, env in setups.items():
            process = start_pinhole("serve", {**base_env, **env}, work)
            processes.append(process)
            url = process.url + path
            subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=True)  # warm
            rows.append(wrk(name, url, args.seconds, args.connections))
            process.stop()
        # The same bytes as a static file, and Pinhole across every core, in
        # alternating rounds.
        target = static_root / path.lstrip("/")
        target.parent.mkdir(parents=True)
        target.write_bytes(body)
        workers = os.cpu_count() or 1
        headline: dict[str, str] = {}
        for n in sorted({1, workers}):
            proc, port = _nginx_static(static_root, work, n)
            servers.append(proc)
            headline[f"nginx static file ({n} worker{'s' if n > 1 else ''})"] = (
                f"http://127.0.0.1:{port}{path}"
            )
        port = free_port()
        serve = ["serve", "--port", str(port), "--workers", str(workers)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "pinhole.app.cli", *serve],
            env={**os.environ, **base_env, "PINHOLE_CACHE": "memory://"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        servers.append(proc)
        wait_for_port(port, proc=proc)
        url = f"http://127.0.0.1:{port}{path}"
        for _ in range(8 * workers):  # warm each worker's L1
            subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=True)
        headline[f"pinhole, L1 hit (--workers {workers})"] = url
        rounds: dict[str, list[Row]] = {name: [] for name in headline}
        for _ in range(args.rounds):
            for name, target_url in headline.items():
                rounds[name].append(wrk(name, target_url, args.seconds, args.connections))
        rows += [_median(runs) for runs in rounds.values()]
    finally:
        for process in processes:
            process.stop()
        for server in servers:
            stop_process(server)
        if redis is not None:
            redis.stop()
        moto.stop()

    reference = next(r for r in rows if r.name.startswith("nginx static file (1"))
    print(
        f"\n{size:,}-byte variant, wrk -t2 -c{args.connections} -d{args.seconds}s, "
        f"{os.cpu_count()} cores shared by server(s) and wrk; the last "
        f"{len(rounds)} rows are medians of {args.rounds} alternating rounds\n"
    )
    print("| setup | req/s | p50 ms | p99 ms | non-2xx | vs nginx (1 worker) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} "
            f"| {r.rps / reference.rps:.2f}x |"
        )
    l1_runs = rounds[f"pinhole, L1 hit (--workers {workers})"]
    nginx_runs = rounds["nginx static file (1 worker)"]
    ratios = ", ".join(f"{a.rps / b.rps:.2f}x" for a, b in zip(l1_runs, nginx_runs, strict=True))
    print(f"\nL1 (--workers {workers}) vs nginx (1 worker), round by round: {ratios}")


if __name__ == "__main__":
    main()
