"""Run an aiohttp app the way every Pinhole role runs: instrumented, and with the
connection-level rules aiohttp leaves out.

Every request goes through ``pinhole.instrument`` (request id, JSON errors,
metrics), wrapped around the app's whole handling here rather than as an
aiohttp middleware (see that module for why).

Two things happen before the app sees a request at all; they live in the
protocol object aiohttp makes per connection:

- **Malformed HTTP** (a bad request line, an invalid header, a header line over
  aiohttp's 8190-byte limit) is answered by aiohttp's parser with plain text.
  Here it gets the JSON error body every other error has, with a stable code.
- **Slow headers.** aiohttp bounds an idle connection (keep-alive timeout) but
  not the time a client takes to finish sending its headers, so a client
  trickling one header byte at a time holds a connection for as long as it
  likes (slow-loris). Here, once the first byte of a request arrives, its
  headers must be complete within ``header_timeout`` or the connection gets a
  JSON ``408`` and is closed. Body reads have their own timeouts (ingest).

aiohttp has no public hook for its per-connection handler class, so this
module owns the small runner that swaps it in; ``tests/faults/
test_ingest_hostile.py`` (malformed HTTP, headers trickled slowly) pins the
behaviour against the locked aiohttp version.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from metrics.definitions import HTTP_ERRORS
from metrics.labels import ERROR_CODE_KEY
from pinhole import cache_policy
from pinhole.fast_routes import FAST_ROUTES_KEY
from pinhole.instrument import instrument
from pinhole.web import SERVICE_KEY, Handler, error_response

log = logging.getLogger("pinhole.http")

_SHUTDOWN_TIMEOUT_SECONDS = 30.0
# aiohttp raises a plain BadHttpMessage for this one; its text is the only tell.
_TOO_MANY_HEADERS = "Too many headers"


def _timeout_response() -> bytes:
    body = json.dumps(
        {
            "error": {
                "code": "request-timeout",
                "message": "The request headers took too long to arrive.",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Cache-Control: {cache_policy.ERROR}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_TIMEOUT_RESPONSE = _timeout_response()


class PinholeRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with JSON parse errors and a header deadline."""

    def __init__(
        self, manager: web.Server, *, service: str, header_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._service = service
        self._header_timeout = header_timeout
        # When the current request's first byte arrived (None: no headers in
        # progress), and the one timer that checks it. The timer is not armed
        # and cancelled per request (that cost ~10% of a keep-alive hit's
        # time): it fires at most once per timeout and re-arms only while a
        # request's headers are still incomplete.
        self._headers_started: float | None = None
        self._header_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        # Bytes that arrive while no request is in hand start the next request's
        # headers (a client that connects and sends nothing is left to the
        # keep-alive timeout, which aiohttp arms at connect).
        if self._headers_started is None and self._awaiting_request():
            self._headers_started = started = self._loop.time()
            if self._header_timer is None:
                self._header_timer = self._loop.call_at(
                    started + self._header_timeout, self._check_header_deadline
                )
        parsed_before = self._request_count
        super().data_received(data)
        if self._request_count != parsed_before:
            self._headers_started = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of a response is on the wire: only aiohttp's own path
            # (which raises and drops the connection) is right.
            return super().handle_error(request, status, exc, message)
        if status >= 500:
            log.error("unhandled error outside the app", exc_info=exc)
            response = error_response(500, "internal-error", "Internal error.")
        elif isinstance(exc, LineTooLong) or _TOO_MANY_HEADERS in (message or ""):
            response = error_response(
                431,
                "headers-too-large",
                "Too many headers, or a header line or the request line is too long.",
            )
        else:
            # The parser's message may quote the client's bytes; JSON-encoding
            # makes that harmless, and it helps whoever wrote the client.
            detail = (message or "malformed request")[:200]
            response = error_response(400, "bad-request", f"Malformed HTTP request: {detail}")
        log.info(
            "malformed request",
            extra={"status": response.status, "error": type(exc).__name__ if exc else None},
        )
        code = response[ERROR_CODE_KEY]
        HTTP_ERRORS.labels(self._service, code).inc()
        response.force_close()
        return response

    def _awaiting_request(self) -> bool:
        return not self._request_in_progress and not self._messages

    def _check_header_deadline(self) -> None:
        self._header_timer = None
        started = self._headers_started
        if started is None:
            return  # no headers in progress; the next request's first byte re-arms
        deadline = started + self._header_timeout
        if self._loop.time() < deadline:
            self._header_timer = self._loop.call_at(deadline, self._check_header_deadline)
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        log.info("request headers timed out", extra={"timeout_seconds": self._header_timeout})
        HTTP_ERRORS.labels(self._service, "request-timeout").inc()
        transport.write(_TIMEOUT_RESPONSE)
        self.force_close()
        transport.close()


class _PinholeServer(web.Server):
    def __init__(self, *args: Any, service: str, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._service = service
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return PinholeRequestHandler(
            self,
            service=self._service,
            header_timeout=self._header_timeout,
            loop=self._loop,
            **self._kwargs,
        )


class PinholeAppRunner(web.AppRunner):
    """``web.AppRunner`` for an app with ``SERVICE_KEY``: every request is
    instrumented, the app's ``FAST_ROUTES_KEY`` routes (if any) are tried before
    its router, and every connection uses ``PinholeRequestHandler``."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._service = app[SERVICE_KEY]
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        # AppRunner._make_server, with our Server class (aiohttp offers no parameter).
        server = await super()._make_server()
        handle: Handler = server.request_handler
        fast = self.app.get(FAST_ROUTES_KEY)
        if fast is not None:
            handle = fast.around(handle)
        return _PinholeServer(
            instrument(self._service, handle),
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            service=self._service,
            header_timeout=self._header_timeout,
            **server._kwargs,
        )


def run_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    header_timeout: float,
    keepalive_timeout: float,
    reuse_port: bool = False,
    loop: asyncio.AbstractEventLoop | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully (like ``web.run_app``)."""
    loop = loop or asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runner = PinholeAppRunner(
        app,
        header_timeout=header_timeout,
        handle_signals=True,
        access_log=None,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_SECONDS,
        keepalive_timeout=keepalive_timeout,
    )

    async def serve() -> None:
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        await asyncio.Event().wait()  # until a signal raises GracefulExit

    main = loop.create_task(serve())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
        loop.run_until_complete(runner.cleanup())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
