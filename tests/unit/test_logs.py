"""Structured logs carry the request id bound for the work in hand."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from pinhole.logs import (
    JsonFormatter,
    RequestIdFilter,
    current_request_id,
    request_context,
)
from pinhole.web import SERVICE_KEY
from tests.support.apps import PinholeTestServer


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("pinhole.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_bound_request_id_is_on_every_line_and_only_inside(captured: io.StringIO) -> None:
    log = logging.getLogger("pinhole.test-logs")
    log.info("before")
    with request_context("req-1"):
        assert current_request_id() == "req-1"
        log.info("inside", extra={"image_id": "abc"})
        with request_context("req-2"):
            log.info("nested")
        log.warning("inside again")
    log.info("after")
    out = lines(captured)
    assert [line.get("request_id") for line in out] == [None, "req-1", "req-2", "req-1", None]
    assert out[1]["image_id"] == "abc"
    assert out[1]["msg"] == "inside"
    assert current_request_id() == ""


def test_an_explicit_request_id_wins(captured: io.StringIO) -> None:
    with request_context("bound"):
        logging.getLogger("pinhole.test-logs").info("x", extra={"request_id": "explicit"})
    assert lines(captured)[0]["request_id"] == "explicit"


def test_ids_are_bounded() -> None:
    with request_context("x" * 500):
        assert len(current_request_id()) == 64


async def test_concurrent_tasks_keep_their_own_ids(captured: io.StringIO) -> None:
    log = logging.getLogger("pinhole.test-logs")

    async def job(request_id: str) -> None:
        with request_context(request_id):
            await asyncio.sleep(0.01)
            log.info("done")
            await asyncio.sleep(0.01)
            log.info("done", extra={"check": current_request_id()})

    await asyncio.gather(*(job(f"job-{i}") for i in range(5)))
    out = lines(captured)
    assert len(out) == 10
    for line in out:
        if "check" in line:
            assert line["check"] == line["request_id"]
    assert {line["request_id"] for line in out} == {f"job-{i}" for i in range(5)}


async def test_requests_bind_the_client_request_id(captured: io.StringIO) -> None:
    log = logging.getLogger("pinhole.test-logs")

    async def handler(_request: web.Request) -> web.Response:
        log.info("handling")
        return web.Response(text=current_request_id())

    app = web.Application()
    app[SERVICE_KEY] = "unit"
    app.router.add_get("/", handler)
    async with TestClient(PinholeTestServer(app)) as client:
        resp = await client.get("/", headers={"X-Request-ID": "from-client"})
        assert await resp.text() == "from-client"
        resp = await client.get("/")
        assert await resp.text() == ""
    assert [line.get("request_id") for line in lines(captured)] == ["from-client", None]
