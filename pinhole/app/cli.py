"""``pinhole``: run the roles, together (``up``) or one per process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence

from aiohttp import web

from pinhole import __version__
from pinhole.app import db, import_cmd, migrate, stats, top
from pinhole.app.command import load_settings, settings_options
from pinhole.app.malloc import DEFAULT_ARENAS, EDGE_ARENAS, limit_malloc_arenas
from pinhole.settings import Settings

log = logging.getLogger("pinhole")

_ENV_HELP = """\
Configuration comes from PINHOLE_* environment variables (nested with __, e.g.
PINHOLE_LIMITS__MAX_PIXELS=50000000) and an optional TOML file (--config or
PINHOLE_CONFIG). Backends are chosen by URL:
  PINHOLE_STORAGE  file://./var/pinhole | s3://bucket?endpoint=http://minio:9000
  PINHOLE_QUEUE    memory://            | kafka://host:9092
  PINHOLE_CACHE    memory://            | redis://host:6379/0 | redis+cluster://h1:7000,h2:7001
  PINHOLE_SHARDING__STORES  more stores by name, for shards (README: Sharding and migrations)
"""


def _run(
    app: web.Application,
    settings: Settings,
    host: str,
    port: int,
    role: str,
    *,
    reuse_port: bool = False,
    loop: asyncio.AbstractEventLoop | None = None,
) -> None:
    from pinhole.http_server import run_app

    log.info("listening", extra={"role": role, "url": f"http://{host}:{port}"})
    run_app(
        app,
        host=host,
        port=port,
        header_timeout=settings.limits.header_timeout_seconds,
        keepalive_timeout=settings.limits.keepalive_timeout_seconds,
        reuse_port=reuse_port,
        loop=loop,
    )


def cmd_up(args: argparse.Namespace) -> None:
    from pinhole.app.runtime import build_up_app

    port = args.port or 8080
    public_url = f"http://localhost:{port}"
    overrides: dict[str, object] = {}
    if "PINHOLE_PUBLIC_URL" not in os.environ:
        overrides["public_url"] = public_url
    settings = load_settings(args, **overrides)
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
    _run(build_up_app(settings), settings, args.host or settings.host, port, "up")


def _require_auth(settings: Settings) -> None:
    if not settings.auth.token_sha256 and not settings.auth.allow_anonymous:
        sys.exit(
            "pinhole ingest: no upload tokens configured. Set PINHOLE_AUTH__TOKEN_SHA256 to a "
            "JSON list of SHA-256 hex digests (e.g. '[\"<sha256 of token>\"]'), or "
            "PINHOLE_AUTH__ALLOW_ANONYMOUS=true for a private network."
        )


def cmd_ingest(args: argparse.Namespace) -> None:
    from pinhole.app.runtime import build_ingest_app

    settings = load_settings(args)
    _require_auth(settings)
    _run(
        build_ingest_app(settings),
        settings,
        args.host or settings.host,
        args.port or settings.ingest_port,
        "ingest",
    )


def cmd_transcode(args: argparse.Namespace) -> None:
    from pinhole.app.runtime import build_transcoder_app

    settings = load_settings(args)
    port = args.port or settings.transcoder_port
    _run(build_transcoder_app(settings), settings, args.host or settings.host, port, "transcoder")


def _refuse_in_process_queue(settings: Settings, role: str, what: str) -> None:
    """An event listener as a process of its own needs a queue other processes
    publish to."""
    if settings.queue.startswith("memory:"):
        sys.exit(
            f"pinhole {role}: PINHOLE_QUEUE is the in-process queue, which no other process "
            f"publishes to. Use kafka://, or set the {what} on `pinhole up` itself."
        )


def cmd_webhooks(args: argparse.Namespace) -> None:
    from pinhole.app.runtime import build_webhooks_app

    settings = load_settings(args)
    if not settings.webhooks.configured:
        sys.exit(
            "pinhole webhooks: no endpoints configured. Set PINHOLE_WEBHOOKS__ENDPOINTS to a "
            'JSON object, e.g. \'{"app": {"url": "https://app.example/hooks", '
            '"secret": "whsec_..."}}\' (README: Webhooks and the event log).'
        )
    _refuse_in_process_queue(settings, "webhooks", "endpoints")
    port = args.port or settings.webhooks_port
    _run(build_webhooks_app(settings), settings, args.host or settings.host, port, "webhooks")


def cmd_cdn_purge(args: argparse.Namespace) -> None:
    from pinhole.app.runtime import build_cdn_purge_app

    settings = load_settings(args)
    if not settings.cdn_purge.configured:
        sys.exit(
            "pinhole cdn-purge: no CDN caches configured. Set PINHOLE_CDN_PURGE__VARNISH_URLS "
            "and/or PINHOLE_CDN_PURGE__NGINX_URLS to a JSON list of base URLs, e.g. "
            "'[\"http://varnish:6081\"]' (README: Purging the CDN)."
        )
    _refuse_in_process_queue(settings, "cdn-purge", "CDN caches")
    port = args.port or settings.cdn_purge_port
    _run(build_cdn_purge_app(settings), settings, args.host or settings.host, port, "cdn-purge")


def cmd_serve(args: argparse.Namespace) -> None:
    from pinhole.app.workers import child_command, new_event_loop, supervise

    settings = load_settings(args)
    host = args.host or settings.host
    port = args.port or settings.edge_port
    if args.workers > 1:
        sys.exit(supervise(args.workers, child_command(host, port, args.config)))
    from pinhole.app.runtime import build_edge_app

    _run(
        build_edge_app(settings),
        settings,
        host,
        port,
        "edge",
        reuse_port=args.reuse_port,
        loop=new_event_loop(),
    )


def _sign_expiry(args: argparse.Namespace) -> int | None:
    """Unix seconds from ``--expires-in`` or ``--expires-at``, or ``None`` for a
    URL that never expires."""
    import datetime
    import time

    if args.expires_in is not None:
        seconds: int = args.expires_in
        if seconds <= 0:
            sys.exit("pinhole sign: --expires-in must be a positive number of seconds")
        return int(time.time()) + seconds
    if args.expires_at is None:
        return None
    text: str = args.expires_at
    if text.isdigit():
        expires = int(text)
    else:
        try:
            when = datetime.datetime.fromisoformat(text)
        except ValueError:
            sys.exit("pinhole sign: --expires-at must be Unix seconds or ISO 8601 with an offset")
        if when.tzinfo is None:
            sys.exit("pinhole sign: --expires-at needs a UTC offset, e.g. 2030-01-01T00:00:00Z")
        expires = int(when.timestamp())
    if expires <= time.time():
        sys.exit("pinhole sign: --expires-at is in the past")
    return expires


def cmd_sign(args: argparse.Namespace) -> None:
    from pinhole.domain.ids import InvalidImageId, parse_image_id
    from pinhole.domain.ladder import Format
    from pinhole.domain.signing import signed_ladder_url
    from server.signing import parse_size, sign_path, signed_tail

    settings = load_settings(args)
    key = args.key or next(iter(settings.edge.signing_keys), None)
    if not key:
        sys.exit("pinhole sign: no key; set PINHOLE_EDGE__SIGNING_KEYS or pass --key")
    presets = settings.preset_table
    preset = presets.get(args.size)
    size = parse_size(args.size)
    if size is None and preset is None:
        sys.exit(
            "pinhole sign: size must be <width>x<height>, e.g. 640x480, one side "
            "with 0 for the other (640x0, 0x480), or a preset "
            f"({', '.join(presets.by_name)})"
        )
    expires = _sign_expiry(args)
    try:
        image_id = parse_image_id(args.image_id)
        fmt = Format.from_extension(args.format) if args.format else None
        if preset is not None:
            # A ladder variant's signed URL (a private image's) always expires.
            if expires is None:
                sys.exit("pinhole sign: a preset's signed URL needs --expires-in or --expires-at")
            print(signed_ladder_url(settings.edge_base_url, key, preset, image_id, fmt, expires))
            return
        assert size is not None
        tail = signed_tail(size[0], size[1], args.fit, image_id, fmt, expires)
    except (InvalidImageId, ValueError) as exc:
        sys.exit(f"pinhole sign: {exc}")
    print(settings.edge_base_url + sign_path(key, tail))


def cmd_reconcile(args: argparse.Namespace) -> None:
    import asyncio

    from pinhole.app.reconcile import run_reconcile

    settings = load_settings(args)
    older_than = settings.reconcile_after_seconds if args.older_than is None else args.older_than
    sys.exit(
        asyncio.run(
            run_reconcile(
                settings, older_than_seconds=older_than, full_scan=args.all, dry_run=args.dry_run
            )
        )
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
    with_settings = [settings_options()]

    def add(
        name: str, func: Callable[[argparse.Namespace], None], help_text: str, port: str
    ) -> None:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_ENV_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=with_settings,
        )
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
    add(
        "cdn-purge",
        cmd_cdn_purge,
        "Purge deleted images from the CDN caches in front of the edge (varnish by "
        "surrogate key, nginx URL by URL), from the image.deleted events "
        "(HTTP only for health and metrics).",
        "PINHOLE_CDN_PURGE_PORT, 8083",
    )
    add(
        "webhooks",
        cmd_webhooks,
        "POST image events to the configured webhook endpoints, signed per the Standard "
        "Webhooks specification, retried, dead-lettered (HTTP only for health and metrics).",
        "PINHOLE_WEBHOOKS_PORT, 8084",
    )
    serve = sub.choices["serve"]
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="edge processes sharing the port with SO_REUSEPORT (default: 1)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    sign = sub.add_parser(
        "sign",
        help="Print a signed URL for an arbitrary size or a preset of an image.",
        description="Print a signed URL for an arbitrary size of an image "
        "(/s/<sig>[/e<expires>]/<w>x<h>/<fit>/ab/cd/ef/<id>[.<ext>]), or for a preset "
        "of its ladder, as a private image needs (/s/<sig>/e<expires>/<preset>/ab/cd/ef/"
        "<id>[.<ext>]), signed with the first of PINHOLE_EDGE__SIGNING_KEYS or --key. "
        "Without --expires-in or --expires-at a size's URL never expires; a preset's "
        "must expire.",
        parents=with_settings,
    )
    sign.add_argument("image_id", metavar="ID")
    sign.add_argument(
        "size",
        metavar="WxH|PRESET",
        help="box in pixels, e.g. 640x480; 640x0 or 0x480: the other side follows the "
        "aspect; or a preset name (236x, 474x, 736x, 1200x, originals)",
    )
    sign.add_argument(
        "--fit",
        default="fit",
        choices=["fit", "fill-centre", "fill-attention", "fill-focal"],
        help="fit inside the box, or fill it and crop (default: fit)",
    )
    sign.add_argument("--format", help="avif, webp, jpg or png (default: negotiate from Accept)")
    sign.add_argument("--key", help="signing key (default: the first configured key)")
    expiry = sign.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires-in",
        type=int,
        metavar="SECONDS",
        help="the URL expires this many seconds from now (403 signature-expired after)",
    )
    expiry.add_argument(
        "--expires-at",
        metavar="WHEN",
        help="the URL expires at this time: Unix seconds or ISO 8601 with an offset",
    )
    sign.set_defaults(func=cmd_sign)
    top.configure_parser(sub.add_parser("top", help=top.HELP, description=top.HELP))
    for name, module in (("migrate", migrate), ("stats", stats), ("import", import_cmd)):
        module.configure_parser(
            sub.add_parser(name, help=module.HELP, description=module.HELP, parents=with_settings)
        )
    db.configure_parser(sub.add_parser("db", help=db.HELP, description=db.HELP))
    reconcile = sub.add_parser(
        "reconcile",
        help="Re-enqueue uploads still pending after a while (a lost job, a broker outage).",
        description="Publish a fresh transcode job for every image still pending after "
        "--older-than seconds, found in the pending index. Safe to run any time, from "
        "several places at once: a duplicate job is skipped by the transcoder.",
        parents=with_settings,
    )
    reconcile.add_argument(
        "--older-than",
        type=float,
        metavar="SECONDS",
        help="only images pending this long (default: PINHOLE_RECONCILE_AFTER_SECONDS, 300)",
    )
    reconcile.add_argument(
        "--all",
        action="store_true",
        help="read every manifest instead of the pending index (slow; rebuilds the index)",
    )
    reconcile.add_argument("--dry-run", action="store_true", help="report, publish nothing")
    reconcile.set_defaults(func=cmd_reconcile)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Before any thread: see pinhole/app/malloc.py.
    limit_malloc_arenas(EDGE_ARENAS if argv[:1] == ["serve"] else DEFAULT_ARENAS)
    args = _parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
