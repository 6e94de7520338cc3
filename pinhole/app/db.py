"""``pinhole db upgrade``: apply the record schema to every record shard server.

Idempotent and resumable: each server records the migrations it has had
(``pinhole.records.schema``), so running it again applies only what is missing,
and a server that was down on one run is upgraded on the next. Every server is
tried even when one fails; the command reports each and exits non-zero if any
failed, so a deploy script can stop before code that needs the new schema.

``pinhole db migrate`` (``pinhole.app.db_migrate``) moves shards between servers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from pinhole.app import db_migrate
from pinhole.app.command import load_settings, settings_options
from pinhole.errors import RecordStoreUnavailable
from pinhole.records.schema import LATEST
from pinhole.settings import Settings

HELP = (
    "Record store servers: `pinhole db upgrade` applies the schema to every shard server, "
    "`pinhole db migrate` moves shards between them, live."
)
UPGRADE_HELP = (
    "Apply every schema migration each record shard server lacks (PINHOLE_RECORDS and "
    "PINHOLE_RECORD_SHARDS__SERVERS). Safe to run again; a server that is down is "
    "reported, the others are upgraded, and the next run finishes the job."
)


async def run_upgrade(settings: Settings, *, out: TextIO = sys.stdout) -> int:
    from pinhole.app.wiring import build_record_servers

    servers = build_record_servers(settings.records, settings.record_shards)
    failed = 0
    try:
        for name in sorted(servers, key=lambda n: (n != "default", n)):
            try:
                result = await servers[name].upgrade_schema()
            except RecordStoreUnavailable as exc:
                failed += 1
                print(f"{name}: FAILED: {exc.reason}", file=out, flush=True)
                continue
            if result.applied:
                line = f"{name}: upgraded from {result.before} to {result.after}"
            else:
                line = f"{name}: at {result.after}, nothing to do"
            print(line, file=out, flush=True)
    finally:
        await asyncio.gather(*(server.close() for server in servers.values()))
    if failed:
        print(
            f"{failed} of {len(servers)} shard servers failed; run `pinhole db upgrade` "
            f"again once they answer (schema version {LATEST} is needed)",
            file=out,
        )
        return 1
    return 0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = sub.add_parser(
        "upgrade", help=UPGRADE_HELP, description=UPGRADE_HELP, parents=[settings_options()]
    )
    upgrade.set_defaults(func=command)
    migrate = sub.add_parser(
        "migrate",
        help=db_migrate.HELP,
        description=db_migrate.HELP + ' See README, "Owners and records".',
        parents=[settings_options()],
    )
    db_migrate.configure_parser(migrate)


def command(args: argparse.Namespace) -> None:
    settings = load_settings(args)
    sys.exit(asyncio.run(run_upgrade(settings)))
