"""Serving a Pinhole app in-process the way ``pinhole`` serves it.

aiohttp's ``TestServer`` runs an app with a plain ``AppRunner``; Pinhole's
runner adds the request instrumentation (JSON errors, request id, metrics) and
the connection rules, so tests that talk HTTP to an app use this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from ingest.app import configure_ingest
from pinhole.http_server import PinholeAppRunner
from pinhole.ports import BlobStore, JobQueue, RecordStore
from pinhole.settings import Limits, Settings
from pinhole.web import SERVICE_KEY


class PinholeTestServer(TestServer):
    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return PinholeAppRunner(self.app, header_timeout=Limits().header_timeout_seconds, **kwargs)


@asynccontextmanager
async def serving_ingest(
    settings: Settings,
    store: BlobStore,
    queue: JobQueue,
    records: RecordStore,
    *,
    prepare: Callable[[web.Application], None] | None = None,
) -> AsyncIterator[tuple[str, web.Application]]:
    """The ingest app on 127.0.0.1, as ``pinhole ingest`` assembles it, with
    ``prepare`` run on the app first (a rate-limit gate, the alias routes).
    Yields its base URL and the app; starts ``queue``, and closes the server,
    the queue and ``records`` after."""
    await queue.start()
    app = web.Application()
    app[SERVICE_KEY] = "ingest"
    if prepare is not None:
        prepare(app)
    configure_ingest(app, settings, store, queue, records=records)
    server = PinholeTestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), app
    finally:
        await server.close()
        await queue.close()
        await records.close()
