"""Every request's outermost layer: request id, JSON errors, request metrics.

``PinholeAppRunner`` (``pinhole.http_server``) wraps the application's whole
handling, routing included, in ``instrument``; the apps have no aiohttp
middlewares. aiohttp runs a middleware chain as partials and coroutines with a
cached chain lookup per request, and adds a layer of its own once any
middleware exists: on an edge L1 hit one pass-through middleware cost as much
CPU as everything Pinhole's handler does (bench/edge, server CPU per request).
Wrapping the app costs one coroutine, and it also covers the router's own
404 and 405 answers.

Order inside the layer: the request id is bound before the app runs, so its
log lines carry it; an exception becomes its JSON error before the request is
counted, so the metrics see the final status and the error's stable code.
"""

from __future__ import annotations

import time

from aiohttp import web

from metrics.http import error_code, request_recorder
from pinhole.logs import bind_request_id
from pinhole.web import Handler, response_for_exception


def instrument(service: str, handle: Handler) -> Handler:
    record = request_recorder(service)

    async def instrumented(request: web.Request) -> web.StreamResponse:
        bind_request_id(request)
        started = time.perf_counter()
        try:
            response = await handle(request)
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect raised as an exception: aiohttp sends it
                record(request, exc.status, "other", started)
                raise
            response = response_for_exception(request, exc)
        except Exception as exc:
            response = response_for_exception(request, exc)
        except BaseException:
            # Cancelled (the client went away, or shutdown): nothing is sent.
            record(request, 500, "internal-error", started)
            raise
        status = response.status
        record(request, status, error_code(response) if status >= 400 else "", started)
        return response

    return instrumented
