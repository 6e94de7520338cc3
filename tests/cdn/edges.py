"""Real nginx and varnish, configured from cdn_config/ with the origin port
filled in, on free loopback ports."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.services import LoggedProcess, free_port, require_binary, wait_for_port

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
