"""Run ``pinhole`` subcommands as real processes from async tests, without blocking the loop."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def pinhole_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pinhole.app.cli", *args]


async def spawn(args: list[str], env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    """Start ``pinhole ARGS`` with its output in ``log_path``."""
    with log_path.open("wb") as log:
        return await asyncio.create_subprocess_exec(
            *pinhole_argv(*args), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
        )


async def run_pinhole(
    args: list[str], env: dict[str, str], within_seconds: float = 300
) -> Finished:
    proc = await asyncio.create_subprocess_exec(
        *pinhole_argv(*args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within_seconds)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
