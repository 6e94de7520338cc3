"""A TCP proxy on loopback that a test switches between passing, refusing and
black-holing connections to a real server behind it (S3 that is down, or hung).

Modes:

- ``pass``: bytes flow both ways, as if there were no proxy.
- ``refuse``: nothing listens on the port (a connect gets RST at once), and
  every open connection is reset: a store that is down.
- ``blackhole``: connections are accepted and whatever arrives is read and
  dropped; nothing is ever answered, on new connections or on open ones: a
  store that hangs (its socket accepts, its process answers nothing).

Leaving ``blackhole`` or ``refuse`` resets every connection made before, as a
restarted server would: a request swallowed by the black hole has no answer to
come. The proxy runs its own event loop in a thread, so it keeps working while
a test blocks (``start_pinhole`` waits with ``time.sleep``) and so the test's
own loop never carries the traffic it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, Literal

Mode = Literal["pass", "refuse", "blackhole"]
_LOOPBACK = "127.0.0.1"
_CHUNK = 65536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a dead peer's kernel would answer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """``127.0.0.1:port`` in front of ``127.0.0.1:upstream_port``."""

    def __init__(self, upstream_port: int, mode: Mode = "pass") -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._mode: Mode = mode
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def endpoint(self) -> str:
        return f"http://{_LOOPBACK}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        # Bind once on a free port, and keep that port across refuse/pass.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((_LOOPBACK, 0))
            self.port = probe.getsockname()[1]
        self._call(self._apply(self._mode, reset=False))
        return self

    def set_mode(self, mode: Mode) -> None:
        """Switch now; returns once the new mode holds for every new connection."""
        self._call(self._apply(mode, reset=True))

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _apply(self, mode: Mode, *, reset: bool) -> None:
        previous, self._mode = self._mode, mode
        leaving_a_fault = reset and previous != mode and previous != "pass"
        if leaving_a_fault or mode == "refuse":
            self._reset_all()
        if mode == "refuse":
            await self._stop_listening()
        elif self._server is None:
            self._server = await asyncio.start_server(
                self._accept, _LOOPBACK, self.port, reuse_address=True
            )

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _shutdown(self) -> None:
        await self._stop_listening()
        self._reset_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self._mode != "pass":
            self._spawn(self._swallow(reader, writer))
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(_LOOPBACK, self.upstream_port)
        except OSError:
            self._writers.discard(writer)
            _reset(writer)
            return
        self._writers.add(up_writer)
        self._spawn(self._pipe(reader, up_writer))
        self._spawn(self._pipe(up_reader, writer))

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read and drop until the client gives up: accepted, never answered."""
        try:
            while await reader.read(_CHUNK):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Forward while passing; once the mode is black-hole, drop what arrives."""
        try:
            while data := await source.read(_CHUNK):
                if self._mode == "pass":
                    sink.write(data)
                    await sink.drain()
        except (ConnectionError, OSError):
            _reset(sink)
        finally:
            self._writers.discard(sink)
            sink.close()


@contextlib.contextmanager
def fault_proxy(upstream_port: int, mode: Mode = "pass") -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_port, mode).start()
    try:
        yield proxy
    finally:
        proxy.stop()
