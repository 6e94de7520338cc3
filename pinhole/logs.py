"""Structured logging: JSON lines when not on a terminal, readable text on one.

A request id travels with the work it started: ingest takes ``X-Request-ID``
(or makes one) and puts it in the job; the transcoder binds it for the job's
duration with ``request_context``; ``RequestIdFilter`` stamps it on every log
record emitted meanwhile, so one grep follows an upload through every process.

A dependency that is down makes the same lines recur many times a second
(aiokafka alone logs each reconnect of each client). ``ThrottledLog`` and
``ThrottleFilter`` say what is wrong once, then at most once per 30 s with the
number of repeats left out (``suppressed``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from aiohttp import web

REQUEST_ID_HEADER = "X-Request-ID"
# The same bound ingest applies before putting the id in a job.
MAX_REQUEST_ID_LENGTH = 64

_request_id: ContextVar[str] = ContextVar("pinhole_request_id", default="")


def current_request_id() -> str:
    return _request_id.get()


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Bind ``request_id`` to every log record emitted inside the block (and its tasks)."""
    token = _request_id.set(request_id[:MAX_REQUEST_ID_LENGTH])
    try:
        yield
    finally:
        _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records that do not carry one already."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in vars(record):
            request_id = _request_id.get()
            if request_id:
                record.request_id = request_id
        return True


def bind_request_id(request: web.Request) -> None:
    """Bind a client-sent ``X-Request-ID`` to the request's log lines.

    aiohttp runs each request in its own task, on a copy of the context, so a
    plain ``set`` ends with the request; no reset needed (this is on every
    edge hit, where a context manager's cost shows)."""
    request_id = request.headers.get(REQUEST_ID_HEADER)
    if request_id:
        _request_id.set(request_id[:MAX_REQUEST_ID_LENGTH])


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# How often a condition that keeps recurring is logged again, after its first line.
THROTTLE_SECONDS = 30.0
# Loggers whose lines repeat for as long as a dependency is down: aiokafka's
# reconnects, heartbeats and commits (several a second per client), every
# retried operation, the Kafka adapter's commit retries.
THROTTLED_LOGGERS = ("aiokafka", "pinhole.retry", "pinhole.queue.kafka")


class Throttle:
    """Admits the first occurrence of each condition, then at most one every
    ``every_seconds``, and counts what it held back in between.

    Conditions are any hashable key; only the ``max_keys`` most recently seen
    are remembered, so a key made of changing values cannot grow it without bound.
    """

    def __init__(
        self,
        every_seconds: float = THROTTLE_SECONDS,
        *,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_seconds = every_seconds
        self._max_keys = max_keys
        self._clock = clock
        # key -> (when it was last admitted, repeats held back since)
        self._seen: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def admit(self, key: Hashable) -> int | None:
        """``None`` to stay quiet; else how many repeats were held back before this one."""
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.every_seconds:
            self._seen[key] = (seen[0], seen[1] + 1)
            self._seen.move_to_end(key)
            return None
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        return 0 if seen is None else seen[1]

    def clear(self, key: Hashable) -> int | None:
        """Forget ``key`` (the condition ended): ``None`` if it was not active,
        else how many repeats were held back since it was last admitted."""
        seen = self._seen.pop(key, None)
        return None if seen is None else seen[1]


class ThrottledLog:
    """A logger for conditions that recur while a dependency is down: says what
    is wrong once, then at most once per ``every_seconds`` with the number of
    repeats left out (``suppressed``), and once more when it is over."""

    def __init__(self, logger: logging.Logger, every_seconds: float = THROTTLE_SECONDS) -> None:
        self.logger = logger
        self._throttle = Throttle(every_seconds)

    def warning(self, key: Hashable, msg: str, **extra: object) -> None:
        suppressed = self._throttle.admit(key)
        if suppressed is None:
            return
        if suppressed:
            extra["suppressed"] = suppressed
        self.logger.warning(msg, extra=extra)

    def recovered(self, key: Hashable, msg: str, **extra: object) -> None:
        """Log ``msg`` if the condition ``key`` had been reported, and forget it."""
        suppressed = self._throttle.clear(key)
        if suppressed is None:
            return
        if suppressed:
            extra["suppressed"] = suppressed
        self.logger.info(msg, extra=extra)


class ThrottleFilter(logging.Filter):
    """Rate-limits the warnings and errors of the ``loggers`` named (and their
    children): each kind of line (logger, level, message template, and the
    ``what`` of a retry) passes once, then once per ``every_seconds`` with
    ``suppressed`` set to the number held back. Other records pass untouched:
    info lines say what happened (a partition assignment, topics created), and
    each of those is news."""

    def __init__(
        self,
        loggers: tuple[str, ...] = THROTTLED_LOGGERS,
        every_seconds: float = THROTTLE_SECONDS,
        *,
        min_level: int = logging.WARNING,
    ) -> None:
        super().__init__()
        self._loggers = loggers
        self._min_level = min_level
        self._throttle = Throttle(every_seconds)

    def _applies(self, name: str) -> bool:
        return any(name == n or name.startswith(n + ".") for n in self._loggers)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self._min_level or not self._applies(record.name):
            return True
        template = record.msg if isinstance(record.msg, str) else repr(record.msg)
        key = (record.name, record.levelno, template, getattr(record, "what", None))
        suppressed = self._throttle.admit(key)
        if suppressed is None:
            return False
        if suppressed:
            record.suppressed = suppressed
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if sys.stderr.isatty() else JsonFormatter())
    handler.addFilter(RequestIdFilter())
    # On the handler, not the loggers: a logger's filters miss its children's records.
    handler.addFilter(ThrottleFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # libvips narrates every operation at INFO.
    logging.getLogger("pyvips").setLevel(logging.WARNING)
