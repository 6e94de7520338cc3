"""What every ``pinhole`` subcommand does first: load settings, then set up logging."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from pinhole.domain.ladder import install
from pinhole.logs import setup_logging
from pinhole.settings import Settings


def settings_options() -> argparse.ArgumentParser:
    """The options of every subcommand that loads settings, as an argparse parent:
    ``--config`` is declared once, here, beside the function that reads it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", metavar="FILE", help="TOML settings file (or PINHOLE_CONFIG)")
    return parent


def load_settings(args: argparse.Namespace, **overrides: object) -> Settings:
    """Settings from the environment and ``--config`` (else ``PINHOLE_CONFIG``), with
    ``overrides`` on top; logging configured at their level."""
    if args.config:
        os.environ["PINHOLE_CONFIG"] = args.config
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        # A bad table of presets (or any bad setting) stops the process at start,
        # saying what is wrong, without a traceback.
        sys.exit(f"pinhole: invalid settings: {exc}")
    setup_logging(settings.log_level)
    # Every command (delete, purge, import, sign...) uses the configured presets.
    install(settings.preset_table)
    return settings
