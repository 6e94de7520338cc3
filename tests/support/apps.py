"""Serving a Pinhole app in-process the way ``pinhole`` serves it.

aiohttp's ``TestServer`` runs an app with a plain ``AppRunner``; Pinhole's
runner adds the request instrumentation (JSON errors, request id, metrics) and
the connection rules, so tests that talk HTTP to an app use this one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from pinhole.http_server import PinholeAppRunner
from pinhole.settings import Limits


class PinholeTestServer(TestServer):
    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return PinholeAppRunner(self.app, header_timeout=Limits().header_timeout_seconds, **kwargs)
