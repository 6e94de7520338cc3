"""A progress bar for long CLI commands, without a dependency.

On a terminal it redraws one line in place (at most ten times a second, so a
fast loop is not slowed by its own bar). Anywhere else, a log file or CI, it
writes a plain line every few seconds and a summary at the end, because
carriage returns make a mess of captured output.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

_REDRAW_SECONDS = 0.1


class Progress:
    """Counts done out of ``total`` (``None`` when unknown), plus named tallies."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        log_every_seconds: float = 5.0,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.counts: dict[str, int] = {}
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._interval = _REDRAW_SECONDS if self._tty else log_every_seconds
        self._width = width
        self._clock = clock
        self._last_draw = clock()
        self._closed = False

    def advance(self, n: int = 1, tally: str | None = None) -> None:
        """Mark ``n`` more items done; ``tally`` names what happened to them."""
        self.done += n
        if tally is not None:
            self.counts[tally] = self.counts.get(tally, 0) + n
        now = self._clock()
        if now - self._last_draw >= self._interval:
            self._last_draw = now
            self._draw()

    def line(self) -> str:
        """The text of the bar as it stands, without control characters."""
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = round(fraction * self._width)
            bar = "#" * filled + "." * (self._width - filled)
            text = f"{self.label} [{bar}] {self.done}/{self.total} {fraction:4.0%}"
        elif self.total == 0:
            text = f"{self.label}: nothing to do"
        else:
            text = f"{self.label}: {self.done}"
        tallies = " ".join(f"{name}={count}" for name, count in sorted(self.counts.items()))
        return f"{text} {tallies}".rstrip()

    def _draw(self) -> None:
        if self._tty:
            # \x1b[K clears what a longer previous line left behind.
            self._stream.write(f"\r{self.line()}\x1b[K")
        else:
            self._stream.write(self.line() + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._draw()
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
