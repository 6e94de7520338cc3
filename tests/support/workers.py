"""What several ``pinhole transcode`` processes did, read from their JSON logs:
their partition assignments ("kafka: assigned [...]") and the images each
rendered ("image ready", logged once per job rendered to completion).
Shared by the scale tests and bench/transcoders."""

from __future__ import annotations

import asyncio
import json
import time

from tests.support.processes import PinholeProcess


def log_lines(process: PinholeProcess) -> list[dict[str, object]]:
    text = process.log_path.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def rendered(process: PinholeProcess) -> list[str]:
    return [str(r["image_id"]) for r in log_lines(process) if r.get("msg") == "image ready"]


def ready_times(process: PinholeProcess) -> list[float]:
    """Wall-clock times (``time.time()``) at which the worker logged "image ready"."""
    return [float(str(r["ts"])) for r in log_lines(process) if r.get("msg") == "image ready"]


def assigned(process: PinholeProcess) -> set[int]:
    """The partition numbers of the worker's latest assignment."""
    lines = [str(r["msg"]) for r in log_lines(process) if str(r["msg"]).startswith("kafka: assig")]
    if not lines:
        return set()
    names = json.loads(lines[-1].split(" ", 2)[2].replace("'", '"'))
    return {int(name.rsplit("[", 1)[1].rstrip("]")) for name in names}


async def wait_for_assignment(
    workers: list[PinholeProcess], partitions: int, within_seconds: float = 60.0
) -> None:
    """Every worker holds partitions, none twice, all covered: twice in a row, so
    the group has settled (a job rendered during a rebalance may render twice)."""
    deadline = time.monotonic() + within_seconds
    stable = 0
    while time.monotonic() < deadline:
        held = [assigned(w) for w in workers]
        union = set().union(*held)
        if all(held) and sum(map(len, held)) == len(union) == partitions:
            stable += 1
            if stable >= 2:
                return
        else:
            stable = 0
        await asyncio.sleep(0.5)
    raise AssertionError("the group never settled:\n" + "\n".join(w.log_tail(10) for w in workers))


async def wait_for_takeover(
    survivors: list[PinholeProcess], partitions: int, within_seconds: float = 60.0
) -> None:
    """The survivors together hold every partition (after the session timeout
    dropped a dead member)."""
    deadline = time.monotonic() + within_seconds
    while True:
        held = set().union(*(assigned(w) for w in survivors))
        if held == set(range(partitions)):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"survivors hold only {sorted(held)}")
        await asyncio.sleep(0.5)
