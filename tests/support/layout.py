"""The product's packages, as the import contract names them (pyproject.toml
``[tool.importlinter] root_packages``): the one list suites that walk the
product's code use."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def product_packages() -> tuple[str, ...]:
    with (REPO / "pyproject.toml").open("rb") as f:
        packages: list[str] = tomllib.load(f)["tool"]["importlinter"]["root_packages"]
    return tuple(packages)
