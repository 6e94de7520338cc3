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
  A request line without an HTTP version (``GET /path``, HTTP/0.9 style), which
  aiohttp's C parser (llhttp) accepts as version 0.9 and aiohttp would serve
  with an ``HTTP/0.9`` status line, is refused here the same way (``400``).
- **Slow headers.** aiohttp bounds an idle connection (keep-alive timeout) but
  not the time a client takes to finish sending its headers, so a client
  trickling one header byte at a time holds a connection for as long as it
  likes (slow-loris). Here, once the first byte of a request arrives, its
  headers must be complete within ``header_timeout`` or the connection gets a
  JSON ``408`` and is closed. The deadline follows the parser, not the
  handler: it starts only with bytes that arrive while the parser is between
  two messages (not inside a body), and it ends when the parser hands a
  message over. A body, however slow (ingest has its own body timeouts), a
  slow handler and an idle keep-alive connection are never under it.

aiohttp has no public hook for its per-connection handler class, so this
module owns the small runner that swaps it in; ``tests/faults/
test_ingest_hostile.py`` (malformed HTTP, headers trickled slowly) and
``tests/faults/test_http_framing.py`` (what the header deadline does not
cover, request lines without a version) pin the behaviour against the locked
aiohttp version.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion10, RawRequestMessage
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from metrics.definitions import HTTP_ERRORS
from metrics.labels import ERROR_CODE_KEY
from pinhole import cache_policy
from pinhole.errors import BadRequest, HeadersTooLarge, InternalError, RequestTimeout
from pinhole.fast_routes import FAST_ROUTES_KEY
from pinhole.instrument import instrument
from pinhole.web import SERVICE_KEY, Handler, pinhole_error_response

log = logging.getLogger("pinhole.http")

_SHUTDOWN_TIMEOUT_SECONDS = 30.0
# aiohttp raises a plain BadHttpMessage for this one; its text is the only tell.
_TOO_MANY_HEADERS = "Too many headers"


_HEADERS_TIMED_OUT = RequestTimeout("The request headers took too long to arrive.")


def _timeout_response() -> bytes:
    """Written straight to the transport: no request exists to answer through aiohttp."""
    error = _HEADERS_TIMED_OUT
    body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
    head = (
        f"HTTP/1.1 {error.status} Request Timeout\r\n"
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
        # The body of the last message the parser handed over (None: none yet),
        # and how many handed-over messages have been looked at.
        self._last_body: StreamReader | None = None
        self._inspected = 0
        # A request was refused here (see _inspect_messages): nothing more is parsed.
        self._refused = False

    def data_received(self, data: bytes) -> None:
        # Bytes that arrive while the parser is between messages start the next
        # request's headers. Bytes of a body do not, whether or not a handler
        # is reading it yet (on Python 3.11 aiohttp starts the handler a loop
        # turn or two after the parser hands the message over, and the body
        # keeps arriving meanwhile). A client that connects, or finishes a
        # request, and then sends nothing is left to the keep-alive timeout.
        if self._refused:
            return
        if data and self._headers_started is None and self._between_messages():
            self._headers_started = started = self._loop.time()
            if self._header_timer is None:
                self._header_timer = self._loop.call_at(
                    started + self._header_timeout, self._check_header_deadline
                )
        super().data_received(data)
        self._inspect_messages()

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        # After a declined Upgrade, aiohttp parses the bytes it held back here,
        # not in data_received: the same checks apply to what that yields.
        result = await super().finish_response(request, resp, start_time)
        self._inspect_messages()
        return result

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
            response = pinhole_error_response(InternalError())
        elif isinstance(exc, LineTooLong) or _TOO_MANY_HEADERS in (message or ""):
            response = pinhole_error_response(HeadersTooLarge())
        else:
            # The parser's message may quote the client's bytes; JSON-encoding
            # makes that harmless, and it helps whoever wrote the client.
            detail = (message or "malformed request")[:200]
            response = pinhole_error_response(BadRequest(f"Malformed HTTP request: {detail}"))
        log.info(
            "malformed request",
            extra={"status": response.status, "error": type(exc).__name__ if exc else None},
        )
        code = response[ERROR_CODE_KEY]
        HTTP_ERRORS.labels(self._service, code).inc()
        response.force_close()
        return response

    def _between_messages(self) -> bool:
        """The parser is not inside a message's body (nor past an Upgrade)."""
        if self._upgraded or self._payload_parser is not None:
            return False
        if self._last_body is not None and self._last_body.is_eof():
            self._last_body = None  # done with: hold no reference to it
        return self._last_body is None

    def _inspect_messages(self) -> None:
        """Look at the messages the parser has handed over since the last call
        (the newest entries of the queue: aiohttp's start() only pops between
        our calls): their headers are complete, so no header deadline runs, and
        one without an HTTP/1.x version is replaced by a parse error."""
        fresh = self._request_count - self._inspected
        self._inspected = self._request_count
        if fresh <= 0:
            return
        self._headers_started = None
        messages = self._messages
        for index in range(max(len(messages) - fresh, 0), len(messages)):
            message, body = messages[index]
            if isinstance(message, RawRequestMessage) and message.version < HttpVersion10:
                exc = BadHttpMessage("the request line has no HTTP/1.x version")
                messages[index] = (
                    _ErrInfo(status=400, exc=exc, message=exc.message),
                    EMPTY_PAYLOAD,
                )
                # Nothing after it is parsed or served: handle_error closes
                # the connection once the 400 is written. (Not self.close():
                # that would also drop the 400 if it waits behind another
                # pipelined request.)
                while len(messages) > index + 1:
                    messages.pop()
                self._last_body = EMPTY_PAYLOAD
                self._refused = True
                return
            self._last_body = body

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
        HTTP_ERRORS.labels(self._service, _HEADERS_TIMED_OUT.code).inc()
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
