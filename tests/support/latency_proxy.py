"""A TCP proxy on loopback that delays every chunk by a fixed one-way latency.

For tests that need a slow link to a real server (a Redis far away) without
slowing the server itself: each direction keeps its order and adds ``delay``
seconds to every chunk, so a request and its reply cost ``2 * delay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class LatencyProxy:
    upstream_port: int
    delay: float
    port: int = 0
    _server: asyncio.Server | None = None
    _pipes: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> LatencyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Read as data comes; write each chunk ``delay`` after it came."""
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    sink.close()
                    return
                sink.write(data)
                await sink.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while data := await source.read(65536):
                chunks.put_nowait((time.monotonic() + self.delay, data))
            chunks.put_nowait((time.monotonic() + self.delay, b""))
            await delivering
        except ConnectionError:
            pass
        finally:
            delivering.cancel()
            sink.close()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await delivering


@contextlib.asynccontextmanager
async def latency_proxies(ports: list[int], delay: float) -> AsyncIterator[list[LatencyProxy]]:
    proxies = [await LatencyProxy(port, delay).start() for port in ports]
    try:
        yield proxies
    finally:
        for proxy in proxies:
            await proxy.stop()
