"""Counting HTTP requests by route template (for ``pinhole.instrument``), and the /metrics handler.

A request is counted after its JSON error is made, so the count has the final
status of every request, and for an error the stable code it was tagged with.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from metrics import hot
from metrics.definitions import HTTP_ERRORS, HTTP_REQUESTS, HTTP_SECONDS
from metrics.labels import ERROR_CODE_KEY, ROUTE_KEY

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Error codes are kebab-case words from a fixed vocabulary; anything else is
# folded into one value so a surprising body cannot grow the label set.
_ERROR_CODE = re.compile(r"[a-z][a-z0-9-]{0,39}")


def route_template(request: web.Request) -> str:
    """The matched route's template, so label values stay bounded."""
    fast: str | None = request.get(ROUTE_KEY)
    if fast is not None:
        return fast
    try:
        info = request.match_info.route.resource
    except (AssertionError, AttributeError):  # failed before or while routing
        return "unmatched"
    if info is None:
        return "unmatched"
    return info.canonical


def error_code(response: web.StreamResponse) -> str:
    """The stable code ``pinhole.web.error_response`` tagged the response with, or ``other``."""
    code = response.get(ERROR_CODE_KEY)
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        return code
    return "other"


RecordRequest = Callable[[web.Request, int, str, float], None]


def request_recorder(service: str) -> RecordRequest:
    """``record(request, status, error_code, started)``; ``started`` is a ``perf_counter()``."""
    # Labelled children by (route, method, status), bound once: ``labels()``
    # takes a lock and builds a tuple on every call, a visible share of a hot
    # L1 hit. Bounded like the labels themselves (route templates, methods
    # aiohttp's parser accepts, statuses). Counted through ``metrics.hot``.
    children: dict[tuple[str, str, int], tuple[hot.HotCounter, hot.HotHistogram]] = {}

    def bound(route: str, method: str, status: int) -> tuple[hot.HotCounter, hot.HotHistogram]:
        key = (route, method, status)
        found = children.get(key)
        if found is None:
            status_label = str(status)
            found = (
                hot.HotCounter(HTTP_REQUESTS.labels(service, route, method, status_label)),
                hot.HotHistogram(HTTP_SECONDS.labels(service, route, status_label)),
            )
            children[key] = found
        return found

    def record(request: web.Request, status: int, code: str, started: float) -> None:
        requests, seconds = bound(route_template(request), request.method, status)
        requests.inc()
        seconds.observe(time.perf_counter() - started)
        if status >= 400:
            HTTP_ERRORS.labels(service, code).inc()

    return record


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def _multiprocess_exposition(path: str) -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


async def metrics_handler(_request: web.Request) -> web.Response:
    """This process's metrics, or in multiprocess mode every live process's, combined."""
    hot.flush()
    path = multiprocess_dir()
    if path is None:
        body = generate_latest(REGISTRY)
    else:
        # Reads one file per process and metric type: keep it off the event loop.
        body = await asyncio.to_thread(_multiprocess_exposition, path)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def mark_process_dead_on_cleanup(_app: web.Application) -> None:
    """In multiprocess mode, drop this process's live gauges (jobs in flight, lag)."""
    path = multiprocess_dir()
    if path is not None:
        mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]
