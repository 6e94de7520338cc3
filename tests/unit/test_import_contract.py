"""The import contract (pyproject.toml [tool.importlinter], run by `make check`):
it names every module of the kernel, and it really fails on a violation.

The violations are written into a copy of the tree, never into the checkout,
and `lint-imports` runs on that copy as `make check` runs it on the real one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.layout import product_packages

REPO = Path(__file__).resolve().parents[2]
PACKAGES = product_packages()
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _config() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as f:
        config: dict[str, object] = tomllib.load(f)["tool"]["importlinter"]
    return config


def _layer_modules() -> set[str]:
    contracts = _config()["contracts"]
    assert isinstance(contracts, list)
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    return {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}


def test_every_top_level_module_of_pinhole_is_in_a_layer() -> None:
    named = _layer_modules()
    here = {
        f"pinhole.{path.stem if path.is_file() else path.name}"
        for path in (REPO / "pinhole").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").exists())
    }
    assert here - named == set(), "add these to a layer in pyproject.toml"
    assert {name for name in named if name.startswith("pinhole.")} - here == set()


def test_the_vendor_ban_covers_the_services_and_the_whole_kernel() -> None:
    contracts = _config()["contracts"]
    assert isinstance(contracts, list)
    banned = next(c for c in contracts if c["type"] == "forbidden")
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    kernel = {name.strip() for name in layers[3].split(":")}
    assert {"ingest", "server", "transcoder", "webhooks", "metrics"} | kernel <= set(
        banned["source_modules"]
    )


def _lint_copy(tmp_path: Path, edit: tuple[str, str] | None) -> subprocess.CompletedProcess[str]:
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    if edit is not None:
        module, line = edit
        path = tmp_path / module
        path.write_text(path.read_text() + f"\n{line}  # a deliberate violation\n")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_as_it_is_keeps_the_contract(tmp_path: Path) -> None:
    result = _lint_copy(tmp_path, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "reported"),
    [
        # The kernel reaching up into a service, and into the app.
        ("pinhole/errors.py", "import server.app", "pinhole.errors -> server.app"),
        (
            "pinhole/domain/keys.py",
            "import pinhole.app.cli",
            "pinhole.domain.keys -> pinhole.app.cli",
        ),
        # Two services.
        ("server/headers.py", "import ingest.app", "server.headers -> ingest.app"),
        # An adapter reaching up, and two adapters.
        ("storage/fs.py", "import transcoder.worker", "storage.fs -> transcoder.worker"),
        ("storage/fs.py", "import pinhole.cache.memory", "storage.fs -> pinhole.cache.memory"),
        # The ground floor reaching up.
        (
            "metrics/definitions.py",
            "import pinhole.settings",
            "metrics.definitions -> pinhole.settings",
        ),
        # A service importing a vendor client, directly and through an adapter.
        ("ingest/sniff.py", "import aiokafka", "ingest.sniff -> aiokafka"),
        ("server/tiers.py", "import pinhole.cache.redis", "pinhole.cache.redis -> redis"),
    ],
)
def test_a_violation_breaks_the_contract(
    tmp_path: Path, module: str, line: str, reported: str
) -> None:
    result = _lint_copy(tmp_path, (module, line))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert reported in result.stdout, result.stdout
