"""pi-heif (HEIC decoding) declares stock Pillow, so it is installed on its own,
without dependencies, in the Makefile and the image, and checked after."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, requires, version

import pi_heif
import pytest

from tests.support.stack import PINHOLE_DOCKERFILE, REPO, dockerfile_instructions

NODEPS = REPO / "requirements-nodeps.lock"


def _pins() -> dict[str, str]:
    pins = {}
    for line in NODEPS.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)$", line.strip())
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def test_the_nodeps_lock_pins_pi_heif_and_nothing_the_main_locks_have() -> None:
    pins = _pins()
    assert pins == {"pi-heif": pins["pi-heif"]}
    main = (REPO / "requirements.lock").read_text().lower()
    assert "pi-heif" not in main
    assert "\npillow==" not in main
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [dep for dep in project["dependencies"] if "heif" in dep]


def test_the_installed_pi_heif_is_the_pinned_one_with_an_hevc_decoder() -> None:
    assert version("pi-heif") == _pins()["pi-heif"]
    # Its metadata asks for stock Pillow; only Pillow-SIMD is installed.
    assert any(r.lower().startswith("pillow") for r in requires("pi-heif") or [])
    with pytest.raises(PackageNotFoundError):
        version("pillow")
    assert "libde265" in pi_heif.libheif_info()["decoders"]
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts/check_no_stock_pillow.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_makefile_installs_it_alone_before_the_pillow_check() -> None:
    recipe = (REPO / "Makefile").read_text().split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    nodeps = recipe.index("pip install -q --no-deps -r requirements-nodeps.lock")
    assert recipe.index("-r requirements.lock") < nodeps
    assert nodeps < recipe.index("check_no_stock_pillow.py")
    assert "requirements-nodeps.lock" in recipe.splitlines()[0]


def test_the_image_installs_it_alone_before_the_pillow_check() -> None:
    runs = [i.arguments for i in dockerfile_instructions(PINHOLE_DOCKERFILE) if i.keyword == "RUN"]
    nodeps = next(i for i, run in enumerate(runs) if "requirements-nodeps.lock" in run)
    assert "pip install --no-deps -r requirements-nodeps.lock" in runs[nodeps]
    checked = next(i for i, run in enumerate(runs) if "check_no_stock_pillow.py" in run)
    assert nodeps < checked
    # The runtime stage imports it, so a missing shared library fails the build.
    assert "import PIL.features, pyvips, pi_heif" in runs[-1]
