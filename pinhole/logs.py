"""Structured logging: JSON lines when not on a terminal, readable text on one.

A request id travels with the work it started: ingest takes ``X-Request-ID``
(or makes one) and puts it in the job; the transcoder binds it for the job's
duration with ``request_context``; ``RequestIdFilter`` stamps it on every log
record emitted meanwhile, so one grep follows an upload through every process.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
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


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if sys.stderr.isatty() else JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # libvips narrates every operation at INFO.
    logging.getLogger("pyvips").setLevel(logging.WARNING)
