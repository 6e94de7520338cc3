"""Signed on-the-fly renders: Pinhole's edge against thumbor and ipx, in one run.

    .venv/bin/python -m bench.render.run [PHOTO_DIR] [--cold 160] [--warm 400]
        [--connections 8] [--rounds 3] [--format jpeg]

First, once: ``bench/fetch-photos.sh`` (photos no test uses), ``npm ci`` in
bench/render (ipx), and thumbor in its own venv (``make bench-deps``, or
``python3 -m venv bench/render/.venv && bench/render/.venv/bin/pip install
-r bench/render/requirements-thumbor.txt``). Nothing here touches Pinhole's venv.

Every server listens on 127.0.0.1 and gets the same photos (PHOTO_DIR, default
.cache/bench-photos): Pinhole from a ``file://`` store seeded the way ingest leaves
an image, thumbor from its file loader, ipx from its fs storage. Each request asks
for a JPEG (or ``--format``) that fits a width, the height following the aspect,
at quality 80. URLs are signed for Pinhole (HMAC-SHA256, its key) and thumbor
(HMAC-SHA1, the same key); ipx has no URL signing.

- **cold**: every request is a size no server has seen (a new width of a photo);
- **warm**: one size per photo, requested once before timing, then repeated.

The load generator is an aiohttp client with ``--connections`` requests in flight
on the same cores. Server CPU per request is the user + system time of the
server's process tree (from /proc) across the timed requests, divided by their
count; RSS is sampled every 100 ms (the sum over the tree and its largest
process). KiB/resp is the mean body over every round (each round has other
sizes). The contenders take turns round by round; each row is its median round.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pyvips

from pinhole.app.wiring import build_blob_store
from server.signing import sign_path, signed_tail
from tests.support.photos import Photo
from tests.support.seed import seed_image
from tests.support.services import free_port, stop_process, wait_for_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORES = os.cpu_count() or 1
KEY = "bench-render-signing-key"
QUALITY = 80
TICK = os.sysconf("SC_CLK_TCK")
MIN_WIDTH, MAX_WIDTH = 200, 1600
WARM_WIDTH = 640
KEEPALIVE = [False]  # --keepalive


# ----------------------------------------------------------------- processes


def _tree(root: int) -> list[int]:
    """``root`` and every descendant (thumbor and ``pinhole serve --workers`` fork)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    def __init__(self, root: int) -> None:
        self.root = root
        self.peak_sum = 0.0
        self.peak_one = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            sizes = [_rss_mb(p) for p in _tree(self.root)]
            self.peak_sum = max(self.peak_sum, sum(sizes))
            self.peak_one = max(self.peak_one, max(sizes, default=0.0))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------- contenders


@dataclass
class Contender:
    name: str
    proc: subprocess.Popen[bytes]
    base: str
    url_for: Callable[[str, int], str]  # (photo name, width) -> path
    version: str = ""
    rounds: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def _logs(work: Path, name: str) -> dict[str, Any]:
    """A server's stdout and stderr go to a file in the work folder (printed on failure)."""
    log = (work / f"{name}.log").open("ab")
    return {"stdout": log, "stderr": subprocess.STDOUT}


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server and every process it forked: thumbor's tornado children outlive
    a SIGTERM to their parent."""
    pids = [p for p in _tree(proc.pid) if p != proc.pid]
    stop_process(proc)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def _listening(proc: subprocess.Popen[bytes], port: int) -> None:
    try:
        wait_for_port(port, timeout=60, proc=proc)
    except BaseException:
        stop_tree(proc)
        raise


def start_pinhole(photos: list[Path], work: Path, fmt: str) -> Contender:
    """``pinhole serve --workers <cores>`` on a file:// store, hot cache in memory."""
    storage = f"file://{work / 'pinhole-store'}"
    ids: dict[str, str] = {}

    async def seed() -> None:
        store = build_blob_store(storage)
        try:
            for path in photos:
                image = pyvips.Image.new_from_file(str(path)).autorot()
                photo = Photo(path.name, path.read_bytes(), image.width, image.height, False)
                ids[path.name] = str(await seed_image(store, photo))
        finally:
            await store.close()

    asyncio.run(seed())
    port = free_port()
    env = {
        **os.environ,
        "PINHOLE_STORAGE": storage,
        "PINHOLE_CACHE": "memory://",
        "PINHOLE_EDGE__SIGNING_KEYS": json.dumps([KEY]),
        "PINHOLE_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "pinhole.app.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(CORES)]
    proc = subprocess.Popen(command, env=env, cwd=ROOT, **_logs(work, "pinhole"))
    _listening(proc, port)
    from pinhole.domain.ids import parse_image_id
    from pinhole.domain.ladder import Format

    image_ids = {name: parse_image_id(value) for name, value in ids.items()}
    ext = Format.from_extension("jpg" if fmt == "jpeg" else fmt)

    def url_for(photo: str, width: int) -> str:
        return sign_path(KEY, signed_tail(width, 4096, "fit", image_ids[photo], ext))

    return Contender(
        f"Pinhole edge (`pinhole serve --workers {CORES}`)",
        proc,
        f"http://127.0.0.1:{port}",
        url_for,
    )


def thumbor_config(folder: Path, work: Path) -> Path:
    conf = work / "thumbor.conf"
    conf.write_text(
        f"""SECURITY_KEY = {KEY!r}
ALLOW_UNSAFE_URL = False
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = {str(folder)!r}
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
ENGINE = 'thumbor.engines.pil'
QUALITY = {QUALITY}
WEBP_QUALITY = {QUALITY}
AUTO_WEBP = False
RESPECT_ORIENTATION = True
PRESERVE_EXIF_INFO = False
MAX_AGE = 0
"""
    )
    return conf


def start_thumbor(folder: Path, work: Path, fmt: str) -> Contender:
    """thumbor from its own venv, PIL engine (stock Pillow), no result storage,
    no source storage (the file loader reads the photo), one process per core."""
    venv = HERE / ".venv"
    if not (venv / "bin" / "thumbor").exists():
        raise SystemExit("no thumbor in bench/render/.venv (see this module's docstring)")
    port = free_port()
    command = [str(venv / "bin" / "thumbor"), "--port", str(port), "--ip", "127.0.0.1"]
    command += ["--conf", str(thumbor_config(folder, work)), "--processes", str(CORES)]
    command += ["--log-level", "error"]
    proc = subprocess.Popen(command, cwd=work, **_logs(work, "thumbor"))
    _listening(proc, port)
    version = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import thumbor, PIL; print(thumbor.__version__, PIL.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    key = KEY.encode()

    def url_for(photo: str, width: int) -> str:
        rest = f"{width}x0/filters:quality({QUALITY}):format({fmt})/{photo}"
        sig = base64.urlsafe_b64encode(hmac.new(key, rest.encode(), hashlib.sha1).digest())
        return f"/{sig.decode()}/{rest}"

    name = f"thumbor {version[0]} (Pillow {version[1]}, `--processes {CORES}`)"
    return Contender(name, proc, f"http://127.0.0.1:{port}", url_for)


def start_ipx(folder: Path, work: Path, fmt: str) -> Contender:
    if not (HERE / "node_modules" / "ipx").exists():
        raise SystemExit("no ipx in bench/render/node_modules (run `npm ci` there)")
    port = free_port()
    proc = subprocess.Popen(
        ["node", str(HERE / "ipx_server.mjs"), str(folder), str(port), str(CORES)],
        cwd=HERE,
        **_logs(work, "ipx"),
    )
    _listening(proc, port)
    ipx = json.loads((HERE / "node_modules" / "ipx" / "package.json").read_text())["version"]
    sharp = json.loads((HERE / "node_modules" / "sharp" / "package.json").read_text())["version"]

    def url_for(photo: str, width: int) -> str:
        return f"/w_{width},f_{fmt},q_{QUALITY}/{photo}"

    name = f"ipx {ipx} (sharp {sharp}, 1 node process, concurrency {CORES})"
    return Contender(name, proc, f"http://127.0.0.1:{port}", url_for)


# ----------------------------------------------------------------- load


async def _load(
    base: str, paths: list[str], connections: int
) -> tuple[list[float], int, float, list[int]]:
    """Every path once, ``connections`` at a time; latencies, non-200s, wall seconds."""
    latencies: list[float] = []
    sizes: list[int] = []
    errors = 0
    queue = list(reversed(paths))
    timeout = aiohttp.ClientTimeout(total=120)
    # A new connection per request (the default): each server's processes then share
    # the load the way their accept loop decides. With keep-alive, tornado's forked
    # processes (thumbor) can each take a share of the client's few long-lived
    # connections at start, unevenly, and keep them.
    connector = aiohttp.TCPConnector(limit=connections, force_close=not KEEPALIVE[0])
    async with aiohttp.ClientSession(base, timeout=timeout, connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while queue:
                path = queue.pop()
                started = time.perf_counter()
                async with session.get(path) as response:
                    body = await response.read()
                    if response.status != 200:
                        errors += 1
                    sizes.append(len(body))
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return latencies, errors, time.perf_counter() - started, sizes


def check(c: Contender, photo: Path, fmt: str) -> None:
    """One render, untimed: it must be a ``fmt`` image 123 px wide with the photo's aspect."""

    async def get() -> tuple[int, bytes]:
        path = c.url_for(photo.name, 123)
        async with aiohttp.ClientSession(c.base) as session, session.get(path) as response:
            return response.status, await response.read()

    status, body = asyncio.run(get())
    if status != 200:
        raise SystemExit(f"{c.name} answered {status}: {body[:200]!r}")
    image = pyvips.Image.new_from_buffer(body, "")
    source = pyvips.Image.new_from_file(str(photo)).autorot()
    loader = str(image.get("vips-loader"))
    expected_height = round(source.height * 123 / source.width)
    if not loader.startswith(fmt) or image.width != 123 or abs(image.height - expected_height) > 1:
        raise SystemExit(f"{c.name} rendered {loader} {image.width}x{image.height}")


def measure(c: Contender, paths: list[str], connections: int) -> dict[str, float]:
    pids = _tree(c.proc.pid)
    cpu_before = _cpu_seconds(pids)
    with RssSampler(c.proc.pid) as rss:
        latencies, errors, seconds, sizes = asyncio.run(_load(c.base, paths, connections))
    cpu = _cpu_seconds(_tree(c.proc.pid)) - cpu_before
    latencies.sort()
    return {
        "rps": len(paths) / seconds,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": errors,
        "cpu_ms": cpu / len(paths) * 1000,
        "rss_sum": rss.peak_sum,
        "rss_one": rss.peak_one,
        "procs": len(pids),
        "kib": sum(sizes) / len(sizes) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("photos", nargs="?", help="folder of JPEGs (default .cache/bench-photos)")
    parser.add_argument("--cold", type=int, default=160, help="requests per cold round")
    parser.add_argument("--warm", type=int, default=400, help="requests per warm round")
    parser.add_argument("--connections", type=int, default=2 * CORES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", default="jpeg", choices=["jpeg", "webp"])
    parser.add_argument("--only", help="comma-separated: pinhole,thumbor,ipx")
    parser.add_argument("--keepalive", action="store_true", help="reuse connections")
    args = parser.parse_args()
    KEEPALIVE[0] = args.keepalive
    folder = Path(args.photos) if args.photos else ROOT / ".cache" / "bench-photos"
    folder = folder.resolve()
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not photos:
        raise SystemExit(f"no JPEGs in {folder} (bench/fetch-photos.sh fetches them)")
    wanted = set((args.only or "pinhole,thumbor,ipx").split(","))
    load = os.getloadavg()
    print(
        f"bench/render on {CORES} cores, {len(photos)} photos from {folder}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average at start "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    # Cold sizes: every (photo, width) pair at most once across the whole run.
    pairs = [(p.name, w) for p in photos for w in range(MIN_WIDTH, MAX_WIDTH)]
    random.Random(21).shuffle(pairs)
    need = args.cold * args.rounds
    if need > len(pairs):
        raise SystemExit(f"--cold x --rounds over {len(pairs)} distinct sizes")
    warm_pairs = [(p.name, WARM_WIDTH) for p in photos]
    contenders: list[Contender] = []
    with tempfile.TemporaryDirectory(prefix="pinhole-bench-render-") as tmp:
        work = Path(tmp)
        try:
            if "pinhole" in wanted:
                contenders.append(start_pinhole(photos, work, args.format))
            if "thumbor" in wanted:
                contenders.append(start_thumbor(folder, work, args.format))
            if "ipx" in wanted:
                contenders.append(start_ipx(folder, work, args.format))
            for c in contenders:  # untimed: imports, first-use setup, and a check
                check(c, photos[0], args.format)
                # Each warm size a few times per core: every Pinhole worker has its own
                # L1, and SO_REUSEPORT spreads new connections over them by hash.
                warmup = [c.url_for(n, w) for n, w in warm_pairs] * (4 * CORES)
                asyncio.run(_load(c.base, warmup, args.connections))
            for round_ in range(args.rounds):
                order = contenders if round_ % 2 == 0 else list(reversed(contenders))
                cold = pairs[round_ * args.cold : (round_ + 1) * args.cold]
                warm = [warm_pairs[i % len(warm_pairs)] for i in range(args.warm)]
                for c in order:
                    paths = [c.url_for(n, w) for n, w in cold]
                    c.rounds.setdefault("cold", []).append(measure(c, paths, args.connections))
                for c in order:
                    paths = [c.url_for(n, w) for n, w in warm]
                    c.rounds.setdefault("warm", []).append(measure(c, paths, args.connections))
        finally:
            for c in contenders:
                stop_tree(c.proc)
    load = os.getloadavg()
    connection = "keep-alive" if args.keepalive else "a new connection per request"
    print(
        f"\n{args.format.upper()} q{QUALITY}, widths {MIN_WIDTH}-{MAX_WIDTH - 1} (cold, "
        f"{args.cold} requests a round) or {WARM_WIDTH} (warm, {args.warm} a round), "
        f"{args.connections} in flight ({connection}), {args.rounds} rounds, median round; "
        f"load average "
        f"at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n"
    )
    print(
        "| requests | server | req/s | rounds (req/s) | vs best peer | p50 ms | p99 ms "
        "| server CPU ms/req | peak RSS MB (all processes / largest) | KiB/resp | non-200 |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind in ("cold", "warm"):
        rows = []
        for c in contenders:
            runs = c.rounds[kind]
            med = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
            rows.append((c, med, runs))
        peers = [m["rps"] for c, m, _ in rows if not c.name.startswith("Pinhole")]
        best = max(peers) if peers else rows[0][1]["rps"]
        for c, m, runs in rows:
            per_round = ", ".join(f"{r['rps']:.1f}" for r in runs)
            rss = f"{max(r['rss_sum'] for r in runs):.0f} / {max(r['rss_one'] for r in runs):.0f}"
            cpu = statistics.median(r["cpu_ms"] for r in runs)
            errors = sum(int(r["errors"]) for r in runs)
            print(
                f"| {kind} | {c.name} | {m['rps']:,.1f} | {per_round} | {m['rps'] / best:.2f}x "
                f"| {m['p50']:.1f} | {m['p99']:.1f} | {cpu:.1f} | {rss} "
                f"| {statistics.mean(r['kib'] for r in runs):.1f} | {errors} |"
            )


if __name__ == "__main__":
    main()
