"""``pinhole serve --workers N``: N edge processes sharing one port (SO_REUSEPORT).

The kernel spreads connections across the children's listening sockets, so the
GIL of one process is not the ceiling. The supervisor only starts, restarts and
stops children; it serves nothing itself. Children count into one Prometheus
multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``, a fresh temp dir unless
the environment names one) so ``/metrics`` on any of them covers all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("pinhole")

_RESTART_DELAY_SECONDS = 1.0
_STOP_TIMEOUT_SECONDS = 40.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (it is a dependency), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def child_command(host: str, port: int, config: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "pinhole.app.cli", "serve", "--host", host, "--port", str(port)]
    cmd += ["--workers", "1", "--reuse-port"]
    if config:
        cmd += ["--config", config]
    return cmd


def supervise(workers: int, command: Sequence[str]) -> int:
    """Run ``workers`` copies of ``command`` until SIGTERM/SIGINT; restart any that die."""
    env = dict(os.environ)
    made_dir: str | None = None
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        made_dir = tempfile.mkdtemp(prefix="pinhole-metrics-")
        env["PROMETHEUS_MULTIPROC_DIR"] = made_dir
    stopping = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    children = [subprocess.Popen(command, env=env) for _ in range(workers)]
    log.info("edge workers started", extra={"workers": workers, "pids": [c.pid for c in children]})
    try:
        while not stopping:
            for i, child in enumerate(children):
                if child.poll() is not None and not stopping:
                    log.warning(
                        "edge worker exited; restarting",
                        extra={"pid": child.pid, "returncode": child.returncode},
                    )
                    time.sleep(_RESTART_DELAY_SECONDS)
                    children[i] = subprocess.Popen(command, env=env)
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
    # A child stopped by our SIGTERM before it installed its handlers (still
    # starting up) died of the signal: that is a clean stop too.
    return 0 if all(c.returncode in (0, -signal.SIGTERM) for c in children) else 1
