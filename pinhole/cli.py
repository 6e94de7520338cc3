"""``pinhole``: run the roles, together (``up``) or one per process."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from aiohttp import web

from pinhole import __version__
from pinhole.logs import setup_logging
from pinhole.settings import Settings

log = logging.getLogger("pinhole")

_ENV_HELP = """\
Configuration comes from PINHOLE_* environment variables (nested with __, e.g.
PINHOLE_LIMITS__MAX_PIXELS=50000000) and an optional TOML file (--config or
PINHOLE_CONFIG). Backends are chosen by URL:
  PINHOLE_STORAGE  file://./var/pinhole | s3://bucket?endpoint=http://minio:9000
  PINHOLE_QUEUE    memory://            | kafka://host:9092
  PINHOLE_CACHE    memory://            | redis://host:6379/0
"""


def _load_settings(args: argparse.Namespace, **overrides: object) -> Settings:
    if args.config:
        os.environ["PINHOLE_CONFIG"] = args.config
    settings = Settings(**overrides)  # type: ignore[arg-type]
    setup_logging(settings.log_level)
    return settings


def _run(app: web.Application, host: str, port: int, role: str) -> None:
    log.info("listening", extra={"role": role, "url": f"http://{host}:{port}"})
    web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=30.0)


def cmd_up(args: argparse.Namespace) -> None:
    from pinhole.runtime import build_up_app

    port = args.port or 8080
    public_url = f"http://localhost:{port}"
    overrides: dict[str, object] = {}
    if "PINHOLE_PUBLIC_URL" not in os.environ:
        overrides["public_url"] = public_url
    settings = _load_settings(args, **overrides)
    settings.ingest_url = settings.public_url
    if not settings.auth.token_sha256:
        settings.auth.allow_anonymous = True
        log.warning(
            "DEV MODE: uploads and deletes need no token. Do not expose this port; "
            "configure PINHOLE_AUTH__TOKEN_SHA256 for anything shared."
        )
    log.info(
        "pinhole up: ingest, transcoder and edge in one process",
        extra={
            "storage": settings.storage,
            "queue": settings.queue,
            "cache": settings.cache,
            "open": settings.public_url,
        },
    )
    _run(build_up_app(settings), args.host or settings.host, port, "up")


def _require_auth(settings: Settings) -> None:
    if not settings.auth.token_sha256 and not settings.auth.allow_anonymous:
        sys.exit(
            "pinhole ingest: no upload tokens configured. Set PINHOLE_AUTH__TOKEN_SHA256 to a "
            "JSON list of SHA-256 hex digests (e.g. '[\"<sha256 of token>\"]'), or "
            "PINHOLE_AUTH__ALLOW_ANONYMOUS=true for a private network."
        )


def cmd_ingest(args: argparse.Namespace) -> None:
    from pinhole.runtime import build_ingest_app

    settings = _load_settings(args)
    _require_auth(settings)
    _run(
        build_ingest_app(settings),
        args.host or settings.host,
        args.port or settings.ingest_port,
        "ingest",
    )


def cmd_transcode(args: argparse.Namespace) -> None:
    from pinhole.runtime import build_transcoder_app

    settings = _load_settings(args)
    port = args.port or settings.transcoder_port
    _run(build_transcoder_app(settings), args.host or settings.host, port, "transcoder")


def cmd_serve(args: argparse.Namespace) -> None:
    from pinhole.runtime import build_edge_app

    settings = _load_settings(args)
    _run(
        build_edge_app(settings),
        args.host or settings.host,
        args.port or settings.edge_port,
        "edge",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pinhole",
        description="Pinhole: upload images, transcode a ladder of sizes and formats, serve them.",
        epilog=_ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pinhole {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], None], help_text: str, port: str
    ) -> None:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_ENV_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--config", metavar="FILE", help="TOML settings file (or PINHOLE_CONFIG)")
        p.add_argument("--host", help="address to listen on (default: PINHOLE_HOST, 127.0.0.1)")
        p.add_argument("--port", type=int, help=f"port to listen on (default: {port})")
        p.set_defaults(func=func)

    add(
        "up",
        cmd_up,
        "Run ingest, transcoder and edge server in one process, with an "
        "upload page at /. Embedded defaults: local disk, in-process queue and cache.",
        "8080",
    )
    add(
        "ingest",
        cmd_ingest,
        "Run the upload API (POST /v1/images, GET /v1/images/{id}).",
        "PINHOLE_INGEST_PORT, 8081",
    )
    add(
        "transcode",
        cmd_transcode,
        "Run a transcoder worker (HTTP only for health and metrics).",
        "PINHOLE_TRANSCODER_PORT, 8082",
    )
    add("serve", cmd_serve, "Run the edge server for variant URLs.", "PINHOLE_EDGE_PORT, 8080")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
