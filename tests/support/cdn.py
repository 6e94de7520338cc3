"""Real nginx and varnish, configured from cdn_config/ with the origin port
filled in, on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import ImageId
from pinhole.domain.manifest import Status
from tests.support.photos import load_photo
from tests.support.processes import PinholeProcess, start_pinhole
from tests.support.seed import seed_image
from tests.support.services import LoggedProcess, free_port, require_binary, wait_for_port

CDN_CONFIG = Path(__file__).resolve().parents[2] / "cdn_config"
_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


# ngx_cache_purge, from Debian's libnginx-mod-http-cache-purge (make test-system-deps).
PURGE_MODULE = "/usr/lib/nginx/modules/ngx_http_cache_purge_module.so"


@dataclass
class EdgeCache(LoggedProcess):
    name: str = ""


def nginx_config(origin_port: int, port: int, workdir: Path) -> Path:
    """The shipped server block, wrapped in a main config that runs unprivileged
    paths under ``workdir``."""
    (workdir / "cache").mkdir(parents=True, exist_ok=True)
    edge = (CDN_CONFIG / "nginx" / "pinhole-edge.conf").read_text()
    edge = (
        edge.replace("{{ORIGIN}}", f"127.0.0.1:{origin_port}")
        .replace("{{LISTEN}}", f"127.0.0.1:{port}")
        .replace("{{CACHE_DIR}}", str(workdir / "cache"))
        # The tests purge from loopback, which the config always allows.
        .replace("{{PURGE_ALLOW}}", "")
    )
    (workdir / "pinhole-edge.conf").write_text(edge)
    temps = "\n".join(f"  {d}_temp_path {workdir / d};" for d in _TEMP_DIRS)
    # As root, nginx would drop its workers to `nobody`, who cannot write here.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = (
        f"{user}load_module {PURGE_MODULE};\n"
        f"daemon off;\nworker_processes 1;\npid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n  access_log off;\n{temps}\n  include {workdir / 'pinhole-edge.conf'};\n}}\n"
    )
    path = workdir / "nginx.conf"
    path.write_text(main)
    return path


def check_nginx(config: Path) -> None:
    subprocess.run(
        [require_binary("nginx"), "-t", "-q", "-p", str(config.parent), "-c", str(config)],
        check=True,
        capture_output=True,
    )


def start_nginx(origin_port: int, workdir: Path) -> EdgeCache:
    port = free_port()
    config = nginx_config(origin_port, port, workdir)
    check_nginx(config)
    log_path = workdir / "nginx.out"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [require_binary("nginx"), "-p", str(workdir), "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for_port(port, proc=proc)
    return EdgeCache(port, proc, log_path, name="nginx")


def varnish_vcl(origin_port: int, workdir: Path) -> Path:
    vcl = (CDN_CONFIG / "varnish" / "pinhole.vcl").read_text()
    vcl = vcl.replace("{{ORIGIN_HOST}}", "127.0.0.1").replace("{{ORIGIN_PORT}}", str(origin_port))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "pinhole.vcl"
    path.write_text(vcl)
    return path


def check_varnish(vcl: Path) -> None:
    """``varnishd -C`` compiles the VCL (with its vmods) and exits."""
    subprocess.run(
        [
            require_binary("varnishd"),
            *("-C", "-j", "none", "-f", str(vcl), "-n", str(vcl.parent / "check")),
        ],
        check=True,
        capture_output=True,
    )


def start_varnish(origin_port: int, workdir: Path) -> EdgeCache:
    port = free_port()
    vcl = varnish_vcl(origin_port, workdir)
    check_varnish(vcl)
    log_path = workdir / "varnish.out"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [
                require_binary("varnishd"),
                "-F",
                "-j",
                "none",
                "-n",
                str(workdir / "instance"),
                "-a",
                f"127.0.0.1:{port}",
                "-f",
                str(vcl),
                "-s",
                "malloc,64m",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for_port(port, proc=proc)
    return EdgeCache(port, proc, log_path, name="varnish")


@dataclass
class Stack:
    root: Path
    origin: PinholeProcess
    caches: dict[str, EdgeCache]
    images: list[ImageId]
    # The origin's record store (SQLite), for the alias redirects it serves.
    records: str


async def _seed(root: Path) -> list[ImageId]:
    store = build_blob_store(f"file://{root}")
    try:
        return [
            await seed_image(store, load_photo("autumn-2560x1600.jpg")),
            await seed_image(store, load_photo("pastelhills-3200x2000.jpg")),
            await seed_image(store, load_photo("flow-dark-720x1440-portrait.jpg")),
            await seed_image(store, load_photo("kay-dark-1080x1920-alpha.png"), Status.PENDING),
            await seed_image(store, load_photo("flow-5120x2880.jpg")),
        ]
    finally:
        await store.close()


@contextlib.contextmanager
def start_stack(
    tmp_path_factory: pytest.TempPathFactory, env: Mapping[str, str] | None = None
) -> Iterator[Stack]:
    """A seeded fs store, a `pinhole serve` origin with no hot cache of its own
    (L1 off, no Redis: once an image's objects are deleted it answers 404 at once,
    so every HIT is the CDN's), and nginx and varnish in front of it. ``env``:
    more settings for the origin (signing keys, rate limits, trusted proxies)."""
    root = tmp_path_factory.mktemp("cdn-storage")
    logs = tmp_path_factory.mktemp("cdn-logs")
    images = asyncio.run(_seed(root))
    records = f"sqlite:///{logs / 'records.db'}"
    origin_env = {
        "PINHOLE_STORAGE": f"file://{root}",
        "PINHOLE_CACHE": "memory://",
        "PINHOLE_HOT_CACHE__L1_MAX_BYTES": "0",
        "PINHOLE_RECORDS": records,
        **(env or {}),
    }
    origin = start_pinhole("serve", origin_env, logs)
    caches: dict[str, EdgeCache] = {}
    try:
        caches["nginx"] = start_nginx(origin.port, tmp_path_factory.mktemp("nginx"))
        caches["varnish"] = start_varnish(origin.port, tmp_path_factory.mktemp("varnish"))
        yield Stack(root, origin, caches, images, records)
    finally:
        for cache in caches.values():
            cache.stop()
        origin.stop()


def variant_path_of(image_id: str, preset: str = "236x", ext: str = "") -> str:
    fan = f"{image_id[0:2]}/{image_id[2:4]}/{image_id[4:6]}"
    return f"/{preset}/{fan}/{image_id}{ext}"


async def cdn_get(
    session: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, str, str, bytes, str]:
    """status, X-Cache-Status, Content-Type, body, ETag"""
    async with session.get(url, headers=headers) as resp:
        body = await resp.read()
        return (
            resp.status,
            resp.headers.get("X-Cache-Status", ""),
            resp.headers.get("Content-Type", ""),
            body,
            resp.headers.get("ETag", ""),
        )


@contextlib.contextmanager
def purge_roles(
    stack: Stack, broker_url: str, name: str, log_dir: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[PinholeProcess, PinholeProcess]]:
    """A real `pinhole ingest` on the stack's storage and records, and a real
    `pinhole cdn-purge` for both of its caches, over the broker at ``broker_url``
    with topics and a group named after ``name``; ``env``: more settings for both."""
    env = {
        "PINHOLE_STORAGE": f"file://{stack.root}",
        "PINHOLE_QUEUE": broker_url,
        "PINHOLE_CACHE": "memory://",
        "PINHOLE_RECORDS": stack.records,
        "PINHOLE_AUTH__ALLOW_ANONYMOUS": "true",
        "PINHOLE_KAFKA__JOBS_TOPIC": f"{name}.jobs",
        "PINHOLE_KAFKA__EVENTS_TOPIC": f"{name}.events",
        "PINHOLE_KAFKA__DEAD_LETTER_TOPIC": f"{name}.dlq",
        "PINHOLE_KAFKA__CONSUMER_GROUP": name,
        "PINHOLE_KAFKA__PARTITIONS": "2",
        "PINHOLE_CDN_PURGE__VARNISH_URLS": f'["{stack.caches["varnish"].url}"]',
        "PINHOLE_CDN_PURGE__NGINX_URLS": f'["{stack.caches["nginx"].url}"]',
        **(env or {}),
    }
    ingest = start_pinhole("ingest", env, log_dir)
    try:
        purger = start_pinhole("cdn-purge", env, log_dir)
        try:
            yield ingest, purger
        finally:
            purger.stop()
    finally:
        ingest.stop()
