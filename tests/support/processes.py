"""Start ``pinhole`` roles as real OS processes and wait until they answer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import LoggedProcess, free_port, stop_process


@dataclass
class PinholeProcess(LoggedProcess):
    role: str = ""

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


async def wait_for_log(process: PinholeProcess, text: str, within_seconds: float = 60.0) -> None:
    """Until ``text`` appears in the process's log (a role saying it is ready for
    something, such as a listener that has subscribed)."""
    deadline = time.monotonic() + within_seconds
    while text not in process.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not logged in {within_seconds}s:\n{process.log_tail()}")
        await asyncio.sleep(0.1)


def start_pinhole(
    role: str, env: dict[str, str], log_dir: Path, cwd: Path | None = None, port: int | None = None
) -> PinholeProcess:
    port = port or free_port()
    log_path = log_dir / f"{role}-{port}.log"
    # The roles of one stack (one log_dir) share a record store of their own,
    # never the embedded default under the repository's ./var.
    env = {"PINHOLE_RECORDS": f"sqlite:///{log_dir / 'records.db'}", **env}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pinhole.app.cli",
                role,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env={**os.environ, **env},
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    process = PinholeProcess(port, proc, log_path, role=role)
    try:
        wait_healthy(process)
    except BaseException:
        process.stop()
        raise
    return process


def stack_env(
    *,
    storage: str,
    queue: str,
    cache: str,
    ingest_port: int,
    edge_port: int,
    token_sha256: str,
    topic_prefix: str,
    partitions: int,
) -> dict[str, str]:
    """Settings for separate ingest/transcode/serve processes sharing real services."""
    return {
        "PINHOLE_STORAGE": storage,
        "PINHOLE_QUEUE": queue,
        "PINHOLE_CACHE": cache,
        "PINHOLE_PUBLIC_URL": f"http://127.0.0.1:{edge_port}",
        "PINHOLE_INGEST_URL": f"http://127.0.0.1:{ingest_port}",
        "PINHOLE_AUTH__TOKEN_SHA256": json.dumps([token_sha256]),
        "PINHOLE_KAFKA__JOBS_TOPIC": f"{topic_prefix}.jobs",
        "PINHOLE_KAFKA__EVENTS_TOPIC": f"{topic_prefix}.events",
        "PINHOLE_KAFKA__DEAD_LETTER_TOPIC": f"{topic_prefix}.jobs.dlq",
        "PINHOLE_KAFKA__PARTITIONS": str(partitions),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
