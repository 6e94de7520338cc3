"""Start ``pinhole`` roles as real OS processes and wait until they answer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.services import free_port, stop_process


@dataclass
class PinholeProcess:
    role: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int:
        stop_process(self.proc, timeout=40)
        return self.proc.returncode


def wait_healthy(process: PinholeProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(
                f"pinhole {process.role} exited with {process.proc.returncode}:\n"
                + process.log_tail()
            )
        try:
            with urllib.request.urlopen(f"{process.url}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(
        f"pinhole {process.role} not healthy after {timeout}s:\n" + process.log_tail()
    )


def start_pinhole(
    role: str, env: dict[str, str], log_dir: Path, cwd: Path | None = None, port: int | None = None
) -> PinholeProcess:
    port = port or free_port()
    log_path = log_dir / f"{role}-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pinhole.cli", role, "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **env},
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    process = PinholeProcess(role, port, proc, log_path)
    try:
        wait_healthy(process)
    except BaseException:
        process.stop()
        raise
    return process
