"""The configs the stack mounts into nginx, Prometheus and Grafana, checked by
their own tools where there is one, and against the paths compose mounts them at."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]
from aiohttp import web

from pinhole.settings import Settings
from tests.support.services import free_port, require_binary, wait_for_port
from tests.support.stack import DOCKER, REPO, dockerfile_instructions, environment, services

CDN_DIR = DOCKER / "cdn"


def _mounts(service: str) -> dict[str, Path]:
    """Container path -> host path, for the bind mounts of a service."""
    mounts: dict[str, Path] = {}
    for volume in services()[service].get("volumes", []):
        source, target, *_mode = str(volume).split(":")
        if source.startswith("/"):
            mounts[target] = Path(source)
    return mounts


def _host_path(service: str, container_path: str) -> Path:
    """Where a file the container reads lives in the repository, through its mounts."""
    for target, source in sorted(_mounts(service).items(), key=lambda kv: -len(kv[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / os.path.relpath(container_path, target)
    raise AssertionError(f"{service}: nothing mounted at {container_path}")


def cdn_env(run_dir: Path, origin: str, **overrides: str) -> dict[str, str]:
    """The CDN container's environment outside Docker: the compose service's,
    with only paths changed (the repository's files stand in for the image's
    copies, and the cache and run directories are temporary), plus ``overrides``."""
    return {
        **environment(services()["cdn"]),
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin") + ":/usr/sbin",
        "CDN_ORIGIN": origin,
        "CDN_CACHE_DIR": str(run_dir / "cache"),
        "CDN_RUN_DIR": str(run_dir / "run"),
        "CDN_TEMPLATE": str(REPO / "cdn_config" / "nginx" / "pinhole-edge.conf"),
        "CDN_MAIN_CONF": str(CDN_DIR / "nginx.conf"),
        **overrides,
    }


def render_cdn(run_dir: Path, origin: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    """Run the CDN container's entrypoint outside Docker with `nginx -t` as the
    command (see cdn_env)."""
    env = cdn_env(run_dir, origin, **overrides)
    require_binary("nginx")
    return subprocess.run(
        ["sh", str(CDN_DIR / "entrypoint.sh"), "-t"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cdn_config_of_the_stack_passes_nginx_t(tmp_path: Path) -> None:
    """nginx resolves the names in `upstream { server ...; }` when it loads the
    config, and `server` (the compose service) resolves only on the stack's
    network, through Docker's DNS. So the check renders the config exactly as
    the container does, with only the origin's host swapped for 127.0.0.1;
    test_compose checks that the host is the `server` service and the port its
    edge port. Everything else, including the purge module, is what runs."""
    origin = environment(services()["cdn"])["CDN_ORIGIN"]
    host, port = origin.split(":")
    result = render_cdn(tmp_path, f"127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    rendered = (tmp_path / "run" / "pinhole-edge.conf").read_text()
    assert f"server 127.0.0.1:{port} max_fails=0;" in rendered
    assert f"listen {environment(services()['cdn'])['CDN_LISTEN']} reuseport;" in rendered
    assert "{{" not in rendered
    # The purger may purge, and so may loopback, before everyone else is denied.
    purgers = environment(services()["cdn"])["CDN_PURGE_ALLOW"].split()
    assert purgers
    assert _purge_access(rendered) == [
        "allow 127.0.0.1",
        "allow ::1",
        *(f"allow {address}" for address in purgers),
        "deny all",
    ]
    # And without the swap, the only complaint is the unresolvable name.
    unresolved = render_cdn(tmp_path / "as-is", origin)
    assert unresolved.returncode != 0
    assert f'host not found in upstream "{host}:{port}"' in unresolved.stderr


def _purge_access(rendered: str) -> list[str]:
    """The allow/deny rules of the rendered /purge location, in order."""
    block = rendered.split("location ~ ^/purge", 1)[1].split("{", 1)[1]
    location = block.split("}", 1)[0]
    rules = [rule.strip() for rule in location.split(";")]
    return [rule for rule in rules if rule.startswith(("allow ", "deny "))]


def test_cdn_entrypoint_refuses_unsafe_values(tmp_path: Path) -> None:
    result = render_cdn(tmp_path, "server:8080;evil")
    assert result.returncode == 64
    assert not (tmp_path / "run" / "pinhole-edge.conf").exists()


@pytest.mark.parametrize(
    "purge_allow",
    [
        "all",  # nginx's own word for everyone
        "0.0.0.0/0",
        "::/0",
        "cdn-purge",  # no hostnames: nginx would not resolve them for allow
        "10.83.0.10;",
        "10.83.0.10; allow all",
        "10.83.0.256",
        "10.83.0.0/33",
        "fd00::/129",
        "::ffff:10.83.0.10",
        "10.83.0.10|x",
        "*",
        "10.83.0.10 {",
    ],
)
def test_cdn_entrypoint_refuses_unsafe_purgers(tmp_path: Path, purge_allow: str) -> None:
    result = render_cdn(tmp_path, "127.0.0.1:8080", CDN_PURGE_ALLOW=purge_allow)
    assert result.returncode == 64, result.stderr
    assert "CDN_PURGE_ALLOW" in result.stderr
    assert not (tmp_path / "run" / "pinhole-edge.conf").exists()


@pytest.mark.parametrize(
    ("purge_allow", "rules"),
    [
        ("", []),
        ("   ", []),
        ("10.83.0.10", ["allow 10.83.0.10"]),
        (
            "10.83.0.8/29  fd00:83::10 2001:db8::/64",
            ["allow 10.83.0.8/29", "allow fd00:83::10", "allow 2001:db8::/64"],
        ),
    ],
)
def test_cdn_renders_any_list_of_purgers_nginx_accepts(
    tmp_path: Path, purge_allow: str, rules: list[str]
) -> None:
    """Empty (or unset) means loopback only, and still a valid config."""
    result = render_cdn(tmp_path, "127.0.0.1:8080", CDN_PURGE_ALLOW=purge_allow)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    rendered = (tmp_path / "run" / "pinhole-edge.conf").read_text()
    assert _purge_access(rendered) == ["allow 127.0.0.1", "allow ::1", *rules, "deny all"]


def _purge_status(port: int, source: str) -> int:
    """GET /purge/... from the given loopback address (all of 127/8 is local)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request("GET", "/purge/v1/img-none/236x", headers={"Accept": "*/*"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_cdn_lets_only_allowed_addresses_purge(tmp_path: Path) -> None:
    """The rendered config running for real: nginx started by the entrypoint,
    with CDN_PURGE_ALLOW naming one loopback alias. A purge of nothing cached is
    404 for an allowed source and 403 for any other. Only the health port moves
    off 8079, which another nginx on this machine may hold."""
    port, health_port = free_port(), free_port()
    main_conf = tmp_path / "nginx.conf"
    main_conf.write_text((CDN_DIR / "nginx.conf").read_text().replace(":8079;", f":{health_port};"))
    env = cdn_env(
        tmp_path,
        f"127.0.0.1:{free_port()}",
        CDN_LISTEN=f"127.0.0.1:{port}",
        CDN_MAIN_CONF=str(main_conf),
        CDN_PURGE_ALLOW="127.0.0.3",
    )
    # As root, nginx would drop its workers to `nobody`, who cannot read tmp_path.
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    require_binary("nginx")
    with (tmp_path / "nginx.out").open("wb") as out:
        proc = subprocess.Popen(
            ["sh", str(CDN_DIR / "entrypoint.sh"), "-g", directives],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc=proc)
        assert _purge_status(port, "127.0.0.1") == 404
        assert _purge_status(port, "127.0.0.3") == 404
        assert _purge_status(port, "127.0.0.2") == 403
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_cdn_healthcheck_port_is_served_by_the_main_config() -> None:
    dockerfile = (CDN_DIR / "Dockerfile").read_text()
    main = (CDN_DIR / "nginx.conf").read_text()
    assert "/dev/tcp/127.0.0.1/8079" in dockerfile
    assert "GET /cdn-health" in dockerfile
    assert "listen 127.0.0.1:8079;" in main
    assert "location = /cdn-health" in main


def _prometheus_config_path() -> str:
    command = [str(word) for word in services()["prometheus"]["command"]]
    (flag,) = [word for word in command if word.startswith("--config.file=")]
    return flag.split("=", 1)[1]


def test_prometheus_config_of_the_stack_passes_promtool() -> None:
    config = _host_path("prometheus", _prometheus_config_path())
    assert config.is_file()
    assert config.is_relative_to(REPO / "metrics" / "prometheus")
    result = subprocess.run(
        [require_binary("promtool"), "check", "config", config.name],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_prometheus_discovers_every_replica_of_every_role() -> None:
    config = yaml.safe_load(_host_path("prometheus", _prometheus_config_path()).read_text())
    defaults = Settings()
    expected = {
        "ingest": ("ingest", defaults.ingest_port),
        "transcoder": ("transcoder", defaults.transcoder_port),
        "server": ("server", defaults.edge_port),
        "cdn-purge": ("cdn-purge", defaults.cdn_purge_port),
    }
    found = {}
    for job in config["scrape_configs"]:
        (sd,) = job["dns_sd_configs"]
        assert sd["type"] == "A"
        (name,) = sd["names"]
        found[job["job_name"]] = (name, sd["port"])
    assert found == expected
    for name, _port in found.values():
        assert name in services()
    # No PINHOLE_ variable in the stack moves a port away from these defaults.
    for role in ("ingest", "transcoder", "server", "cdn-purge"):
        assert not any(var.endswith("_PORT") for var in environment(services()[role]))


def _grafana_provisioning(kind: str) -> list[dict[str, Any]]:
    directory = _host_path("grafana", f"/etc/grafana/provisioning/{kind}")
    files = sorted(directory.glob("*.yml")) + sorted(directory.glob("*.yaml"))
    assert files, f"no {kind} provisioning in {directory}"
    return [yaml.safe_load(path.read_text()) for path in files]


def test_grafana_provisioning_is_mounted_where_grafana_reads_it() -> None:
    mounts = _mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == REPO / "metrics" / "grafana" / "provisioning"
    (datasources,) = _grafana_provisioning("datasources")
    (datasource,) = datasources["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus"
    assert url.hostname in services()
    assert url.port == 9090
    assert any(":9090" in str(port) for port in services()["prometheus"].get("ports", []))


def test_grafana_dashboard_provider_path_holds_the_dashboard() -> None:
    (providers,) = _grafana_provisioning("dashboards")
    (provider,) = providers["providers"]
    dashboards = _host_path("grafana", provider["options"]["path"])
    assert dashboards == REPO / "metrics" / "grafana"
    dashboard = json.loads((dashboards / "pinhole.json").read_text())
    assert dashboard["uid"] == "pinhole"
    home = environment(services()["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_path("grafana", home) == dashboards / "pinhole.json"


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_mounted_repository_paths_exist(service: str) -> None:
    for source in _mounts(service).values():
        assert source.exists(), source


def _cdn_healthcheck_command() -> list[str]:
    (instruction,) = [
        i for i in dockerfile_instructions(CDN_DIR / "Dockerfile") if i.keyword == "HEALTHCHECK"
    ]
    command: list[str] = json.loads(instruction.arguments.split(" CMD ", 1)[1])
    return command


@pytest.fixture
async def cdn_health_port() -> AsyncIterator[int]:
    """Stands in for the main config's health server (`return 200 "ok\\n"`)."""

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/cdn-health", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def _run_healthcheck(port: int) -> int:
    command = [arg.replace("8079", str(port)) for arg in _cdn_healthcheck_command()]
    proc = await asyncio.create_subprocess_exec(*command)
    return await asyncio.wait_for(proc.wait(), timeout=30)


async def test_cdn_healthcheck_command_passes_on_200(cdn_health_port: int) -> None:
    """The Dockerfile's bash /dev/tcp probe, run for real against an HTTP server
    on a free port instead of 8079."""
    assert await _run_healthcheck(cdn_health_port) == 0


async def test_cdn_healthcheck_command_fails_when_nothing_listens() -> None:
    assert await _run_healthcheck(free_port()) != 0
