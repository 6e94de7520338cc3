"""The image's HEALTHCHECK: ``GET /healthz`` on the port of the role the container runs.

The slim image has no curl, and one image runs every role, each on its own port.
So the port is worked out the way the role itself works it out: the command line
of the container's main process (PID 1) is parsed with the CLI's own parser
(``--port``, ``--config``), and the default port comes from the same
``PINHOLE_*`` settings the process reads. Exit 0 when ``/healthz`` answers 200,
1 otherwise (Docker's contract). A container running a one-shot command
(``reconcile``, ``sign``) has nothing to probe and counts as healthy.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

# Addresses that mean "every interface": probe over loopback instead.
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def pinhole_args(cmdline: Sequence[str]) -> list[str] | None:
    """The arguments after ``pinhole`` in a process's argv, which may start with
    the interpreter (``python .../bin/pinhole serve``) or an init (``docker-init --``)."""
    for index, arg in enumerate(cmdline):
        if Path(arg).name == "pinhole":
            return list(cmdline[index + 1 :])
    return None


def probe_url(cmdline: Sequence[str]) -> str | None:
    """The ``/healthz`` URL of the server the command line starts; None if it starts none."""
    from pinhole.app.cli import _parser
    from pinhole.settings import Settings

    args = pinhole_args(cmdline)
    if args is None:
        raise ValueError(f"not a pinhole command: {list(cmdline)!r}")
    try:
        parsed, _unknown = _parser().parse_known_args(args)
    except SystemExit:  # --help, --version: no server
        return None
    if getattr(parsed, "config", None):
        os.environ["PINHOLE_CONFIG"] = parsed.config
    settings = Settings()
    default_ports = {
        "up": 8080,
        "ingest": settings.ingest_port,
        "transcode": settings.transcoder_port,
        "serve": settings.edge_port,
        "cdn-purge": settings.cdn_purge_port,
        "webhooks": settings.webhooks_port,
    }
    if parsed.command not in default_ports:
        return None
    port = parsed.port or default_ports[parsed.command]
    host = parsed.host or settings.host
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def read_cmdline(path: Path) -> list[str]:
    return [arg for arg in path.read_bytes().decode().split("\0") if arg]


def main(argv: Sequence[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument(
        "--cmdline",
        type=Path,
        default=Path("/proc/1/cmdline"),
        help="NUL-separated argv of the process to probe (default: PID 1's)",
    )
    options.add_argument("--timeout", type=float, default=3.0)
    opts = options.parse_args(argv)
    try:
        url = probe_url(read_cmdline(opts.cmdline))
    except Exception as exc:  # a settings or parsing error: report, count as unhealthy
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    if url is None:
        print("healthcheck: no server in this container's command; nothing to probe")
        return 0
    try:
        with urllib.request.urlopen(url, timeout=opts.timeout) as response:
            status = response.status
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"healthcheck: {url}: {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
