"""docker/healthcheck.py, the image's HEALTHCHECK: finds the role's port from
PID 1's command line and the settings, and probes a real /healthz."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp import web

from pinhole.web import health_routes
from tests.support.services import free_port
from tests.support.stack import DOCKER


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pinhole_healthcheck", DOCKER / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load()
VENV_PINHOLE = ["/opt/pinhole/venv/bin/python", "/opt/pinhole/venv/bin/pinhole"]


@pytest.fixture(autouse=True)
def image_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what the image's ENV sets, whatever the test runner's environment."""
    for var in [v for v in os.environ if v.upper().startswith("PINHOLE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("PINHOLE_HOST", "0.0.0.0")


@pytest.mark.parametrize(
    ("cmdline", "url"),
    [
        ([*VENV_PINHOLE, "ingest"], "http://127.0.0.1:8081/healthz"),
        ([*VENV_PINHOLE, "transcode"], "http://127.0.0.1:8082/healthz"),
        ([*VENV_PINHOLE, "serve", "--workers", "2"], "http://127.0.0.1:8080/healthz"),
        ([*VENV_PINHOLE, "cdn-purge"], "http://127.0.0.1:8083/healthz"),
        (["pinhole", "cdn-purge", "--port", "9083"], "http://127.0.0.1:9083/healthz"),
        (["pinhole", "serve", "--port", "9000"], "http://127.0.0.1:9000/healthz"),
        (["/sbin/docker-init", "--", "pinhole", "up"], "http://127.0.0.1:8080/healthz"),
        (["pinhole", "ingest", "--host", "10.0.0.5"], "http://10.0.0.5:8081/healthz"),
        (["pinhole", "ingest", "--host", "::1"], "http://[::1]:8081/healthz"),
        (["pinhole", "reconcile", "--dry-run"], None),
    ],
)
def test_probe_url_follows_the_role(cmdline: list[str], url: str | None) -> None:
    assert healthcheck.probe_url(cmdline) == url


def test_probe_url_reads_ports_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINHOLE_TRANSCODER_PORT", "9182")
    monkeypatch.setenv("PINHOLE_CDN_PURGE_PORT", "9183")
    assert healthcheck.probe_url(["pinhole", "transcode"]) == "http://127.0.0.1:9182/healthz"
    assert healthcheck.probe_url(["pinhole", "cdn-purge"]) == "http://127.0.0.1:9183/healthz"


def test_probe_url_reads_the_config_file_pid_1_was_given(tmp_path: Path) -> None:
    config = tmp_path / "pinhole.toml"
    config.write_text("edge_port = 9280\n")
    try:
        assert (
            healthcheck.probe_url(["pinhole", "serve", "--config", str(config)])
            == "http://127.0.0.1:9280/healthz"
        )
    finally:
        os.environ.pop("PINHOLE_CONFIG", None)


def test_a_command_that_is_not_pinhole_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a pinhole command"):
        healthcheck.probe_url(["/bin/sh", "-c", "sleep 1"])


@pytest.fixture
async def healthz_port() -> AsyncIterator[int]:
    app = web.Application()
    app.add_routes(health_routes([]))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield port
    await runner.cleanup()


def _cmdline(tmp_path: Path, *args: str) -> Path:
    path = tmp_path / "cmdline"
    path.write_bytes(b"\0".join(arg.encode() for arg in [*VENV_PINHOLE, *args]) + b"\0")
    return path


async def test_main_is_healthy_when_healthz_answers(healthz_port: int, tmp_path: Path) -> None:
    cmdline = _cmdline(tmp_path, "serve", "--port", str(healthz_port))
    # main() blocks (urllib): off the loop that serves /healthz.
    assert await asyncio.to_thread(healthcheck.main, ["--cmdline", str(cmdline)]) == 0


async def test_main_is_unhealthy_when_nothing_listens(tmp_path: Path) -> None:
    cmdline = _cmdline(tmp_path, "ingest", "--port", str(free_port()))
    assert await asyncio.to_thread(healthcheck.main, ["--cmdline", str(cmdline)]) == 1


def test_main_is_healthy_for_a_one_shot_command(tmp_path: Path) -> None:
    assert healthcheck.main(["--cmdline", str(_cmdline(tmp_path, "reconcile"))]) == 0
