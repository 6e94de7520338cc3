"""aiohttp middleware that counts requests by route template, and the /metrics handler."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from metrics.definitions import HTTP_REQUESTS, HTTP_SECONDS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_template(request: web.Request) -> str:
    """The matched route's template, so label values stay bounded."""
    info = request.match_info.route.resource
    if info is None:
        return "unmatched"
    return info.canonical


def metrics_middleware(service: str) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = route_template(request)
            HTTP_REQUESTS.labels(service, route, request.method, str(status)).inc()
            HTTP_SECONDS.labels(service, route).observe(time.perf_counter() - started)

    return middleware


async def metrics_handler(_request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
