"""The CLI progress helper: a redrawn bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from pinhole.app.progress import Progress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_terminal_gets_one_line_redrawn_in_place() -> None:
    out, clock = io.StringIO(), _Clock()
    with Progress("reconcile", 4, stream=out, tty=True, width=8, clock=clock) as bar:
        for tally in ("requeued", "cleaned", "requeued", None):
            clock.now += 1
            bar.advance(tally=tally)
    text = out.getvalue()
    assert text.startswith("\rreconcile [##......] 1/4")
    assert text.endswith("\rreconcile [########] 4/4 100% cleaned=1 requeued=2\x1b[K\n")
    assert text.count("\n") == 1


def test_redraws_are_throttled() -> None:
    out, clock = io.StringIO(), _Clock()
    bar = Progress("x", 1000, stream=out, tty=True, clock=clock)
    for _ in range(1000):
        bar.advance()  # the clock never moves: nothing is drawn until close
    bar.close()
    assert out.getvalue().count("\r") == 1


def test_pipes_get_plain_lines_every_few_seconds_and_a_summary() -> None:
    out, clock = io.StringIO(), _Clock()
    bar = Progress("reconcile", None, stream=out, tty=False, log_every_seconds=5, clock=clock)
    for _ in range(12):
        clock.now += 1
        bar.advance(tally="requeued")
    bar.close()
    bar.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert lines == [
        "reconcile: 5 requeued=5",
        "reconcile: 10 requeued=10",
        "reconcile: 12 requeued=12",
    ]
    assert "\r" not in out.getvalue()


def test_nothing_to_do_says_so() -> None:
    out = io.StringIO()
    Progress("reconcile", 0, stream=out, tty=False).close()
    assert out.getvalue() == "reconcile: nothing to do\n"
