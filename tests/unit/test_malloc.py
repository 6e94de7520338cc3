"""pinhole.app.malloc: the arena limit holds for threads started after it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pinhole.app import cli
from pinhole.app.malloc import DEFAULT_ARENAS, EDGE_ARENAS

ROOT = Path(__file__).resolve().parents[2]

# Eight threads allocate at once, then glibc prints one "Arena N:" block per arena.
CHILD = """
import ctypes, sys, threading
from pinhole.app.malloc import limit_malloc_arenas
print(limit_malloc_arenas(), flush=True)
barrier = threading.Barrier(8)
keep = []
def work():
    barrier.wait()
    keep.append([bytearray(200_000) for _ in range(50)])
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()
"""


def arenas(env_arena_max: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if env_arena_max is not None:
        env["MALLOC_ARENA_MAX"] = env_arena_max
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    count = sum(line.startswith("Arena ") for line in done.stderr.splitlines())
    return done.stdout.strip() == "True", count


def test_two_arenas_by_default() -> None:
    limited, count = arenas(None)
    assert limited
    assert 1 <= count <= 2


def test_the_environment_wins() -> None:
    # MALLOC_ARENA_MAX=0 is glibc's own default: one arena per thread here.
    limited, count = arenas("0")
    assert not limited
    assert count > 2
    limited, count = arenas("3")
    assert not limited
    assert count <= 3


def test_every_command_limits_arenas_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def limit(arenas: int = DEFAULT_ARENAS) -> bool:
        calls.append(arenas)
        return True

    monkeypatch.setattr(cli, "limit_malloc_arenas", limit)
    for command in ("serve", "transcode"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
    # The edge gets one arena, every other command two.
    assert calls == [EDGE_ARENAS, DEFAULT_ARENAS]
    assert EDGE_ARENAS == 1
