"""``pinhole import``: the command line. Kept apart from ``pinhole.app.importer``
so that every other ``pinhole`` command starts without loading the ingest code."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

HELP = (
    "Bulk-import a folder (walked recursively) or a bucket prefix "
    "(s3://bucket/prefix?endpoint=...) of images, through the same checks and "
    "steps as an upload; resumable, with a summary of what was refused and why."
)
DEFAULT_CONCURRENCY = 4


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="a directory (walked recursively) or s3://bucket/prefix?endpoint=...",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"files in flight at once (default: {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--journal",
        metavar="FILE",
        type=Path,
        help="resume journal (default: pinhole-import-<hash>.journal in the working directory)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--dry-run", action="store_true", help="check every file, write nothing, queue nothing"
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    from pinhole.app.command import load_settings
    from pinhole.app.importer import run_import
    from pinhole.errors import TransientError

    if args.concurrency < 1:
        sys.exit("pinhole import: --concurrency must be at least 1")
    settings = load_settings(args)
    try:
        report = asyncio.run(
            run_import(
                settings,
                args.source,
                concurrency=args.concurrency,
                journal_path=args.journal,
                dry_run=args.dry_run,
            )
        )
    except KeyboardInterrupt:
        # The journal is closed on the way out: the same command resumes.
        sys.exit("pinhole import: interrupted; run the same command to resume")
    except ValueError as exc:
        sys.exit(f"pinhole import: {exc}")
    except TransientError as exc:
        # Listing the source or starting the queue failed: nothing was settled.
        print(f"pinhole import: {exc}", file=sys.stderr)
        sys.exit(1)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(report.text())
    sys.exit(report.exit_status)
