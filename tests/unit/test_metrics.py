"""Metric definitions, request instrumentation, /metrics, and the transcoder's counting."""

from __future__ import annotations

import ast
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import metrics.definitions as definitions
from metrics import hot
from metrics.http import error_code, metrics_handler
from pinhole.domain.ids import image_id_from_digest
from pinhole.domain.job import SourceInfo, TranscodeJob
from pinhole.domain.keys import original_key
from pinhole.domain.manifest import Manifest, Status
from pinhole.errors import NotFound
from pinhole.logs import JsonFormatter, RequestIdFilter
from pinhole.manifests import save_manifest
from pinhole.ports import Message
from pinhole.queue.memory import MemoryJobQueue
from pinhole.settings import Settings
from pinhole.web import SERVICE_KEY, error_response
from storage.fs import FsBlobStore
from storage.instrumented import InstrumentedBlobStore
from tests.support.apps import PinholeTestServer
from tests.support.badinput import png_declaring, small_jpeg
from tests.support.layout import product_packages
from transcoder.vips_engine import VipsEngine
from transcoder.worker import Transcoder

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = product_packages()
# Defined ahead of the feature that increments it (lazy rendering of missing variants).
MAY_BE_UNUSED = {"RENDERS_ON_THE_FLY"}


def defined_metrics() -> dict[str, MetricWrapperBase]:
    return {
        name: value
        for name, value in vars(definitions).items()
        if isinstance(value, MetricWrapperBase)
    }


def value(name: str, **labels: str) -> float:
    hot.flush()  # the hot path's counts reach prometheus-client in batches
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_metric_is_prefixed_and_documented() -> None:
    metrics = defined_metrics()
    assert len(metrics) >= 17
    for attr, metric in metrics.items():
        assert metric._name.startswith("pinhole_"), attr
        assert metric._documentation, attr


def test_every_metric_is_used_by_product_code() -> None:
    """A metric nobody increments is a dashboard panel that lies."""
    used: set[str] = set()
    for package in PRODUCT_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "metrics" / "definitions.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == "metrics.definitions":
                    used.update(alias.name for alias in node.names)
    unused = set(defined_metrics()) - used - MAY_BE_UNUSED
    assert not unused, f"defined but never imported by product code: {sorted(unused)}"


def test_gauges_say_how_processes_combine() -> None:
    for attr, metric in defined_metrics().items():
        if metric._type == "gauge":
            assert metric._multiprocess_mode != "all", attr  # type: ignore[attr-defined]


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def missing(_request: web.Request) -> web.Response:
        raise NotFound("No image with this id.")

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    async def plain_error(_request: web.Request) -> web.Response:
        return web.Response(status=418, text="teapot")

    app = web.Application()
    app[SERVICE_KEY] = "unit"
    app.router.add_get("/items/{item_id}", ok)
    app.router.add_get("/missing/{item_id}", missing)
    app.router.add_get("/broken", broken)
    app.router.add_get("/teapot", plain_error)
    app.router.add_get("/metrics", metrics_handler)
    async with TestClient(PinholeTestServer(app)) as test_client:
        yield test_client


async def test_requests_are_counted_by_route_template_status_and_code(
    client: TestClient[web.Request, web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    requests = "pinhole_http_requests_total"
    errors = "pinhole_http_errors_total"
    before = {
        "ok": value(requests, service="unit", route="/items/{item_id}", method="GET", status="200"),
        "404": value(errors, service="unit", code="not-found"),
        "unmatched": value(requests, service="unit", route="unmatched", method="GET", status="404"),
        "500": value(errors, service="unit", code="internal-error"),
        "other": value(errors, service="unit", code="other"),
        "latency": value(
            "pinhole_http_request_seconds_count",
            service="unit",
            route="/items/{item_id}",
            status="200",
        ),
    }
    for item in ("a", "b", "c"):
        assert (await client.get(f"/items/{item}")).status == 200
    assert (await client.get("/missing/x")).status == 404
    assert (await client.get("/no/such/route")).status == 404
    with caplog.at_level(logging.CRITICAL, logger="pinhole.http"):
        assert (await client.get("/broken")).status == 500
    assert (await client.get("/teapot")).status == 418

    # Three different paths, one route template: bounded labels.
    ok = value(requests, service="unit", route="/items/{item_id}", method="GET", status="200")
    assert ok - before["ok"] == 3
    assert value(
        "pinhole_http_request_seconds_count", service="unit", route="/items/{item_id}", status="200"
    ) - before["latency"] == pytest.approx(3)
    assert (
        value(requests, service="unit", route="unmatched", method="GET", status="404")
        - before["unmatched"]
        == 1
    )
    # The router's own 404 and the handler's NotFound share the stable code.
    assert value(errors, service="unit", code="not-found") - before["404"] == 2
    assert value(errors, service="unit", code="internal-error") - before["500"] == 1
    assert value(errors, service="unit", code="other") - before["other"] == 1

    resp = await client.get("/metrics")
    text = await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert 'pinhole_http_errors_total{code="not-found",service="unit"}' in text


def test_error_code_is_bounded() -> None:
    def response(code: str) -> web.Response:
        return error_response(400, code, "m")

    assert error_code(response("image-too-large")) == "image-too-large"
    assert error_code(response("Not A Code!")) == "other"
    assert error_code(response("x" * 100)) == "other"
    # Not made by error_response: no tag, whatever the body says.
    assert error_code(web.json_response({"error": {"code": "not-found"}}, status=404)) == "other"
    assert error_code(web.Response(status=500, text="plain")) == "other"


async def test_storage_operations_are_counted_by_op_and_result(tmp_path: Path) -> None:
    store = InstrumentedBlobStore(FsBlobStore(tmp_path))
    before_put = value("pinhole_storage_operations_total", op="put", result="ok")
    before_missing = value("pinhole_storage_operations_total", op="get", result="not_found")
    await store.put("variants/a", b"x", content_type="image/jpeg")
    with pytest.raises(Exception, match="variants/b"):
        await store.get("variants/b")
    assert value("pinhole_storage_operations_total", op="put", result="ok") == before_put + 1
    assert (
        value("pinhole_storage_operations_total", op="get", result="not_found")
        == before_missing + 1
    )
    assert value("pinhole_storage_operation_seconds_count", op="get", result="not_found") >= 1


@dataclass
class FakeDelivery:
    message: Message
    topic: str = "jobs"
    acked: list[bool] = field(default_factory=list)

    async def ack(self) -> None:
        self.acked.append(True)


@pytest.fixture
def json_log() -> Iterator[list[str]]:
    captured: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(self.format(record))

    handler = ListHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("pinhole.transcoder")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield captured
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


async def test_transcoder_counts_jobs_and_tags_them_with_the_request_id(
    tmp_path: Path, json_log: list[str]
) -> None:
    settings = Settings(storage=f"file://{tmp_path}")
    store = InstrumentedBlobStore(FsBlobStore(tmp_path))
    queue = MemoryJobQueue()
    transcoder = Transcoder(settings, store, queue, VipsEngine(settings.transcode))

    async def job_message(data: bytes, fmt: str, request_id: str) -> Message:
        image_id = image_id_from_digest(hashlib.sha256(data).digest())
        job = TranscodeJob(
            image_id=image_id,
            original_key=original_key(image_id),
            source=SourceInfo(format=fmt, width=64, height=48, bytes=len(data), has_alpha=False),
            submitted_at=0.0,
            request_id=request_id,
        )
        await store.put(original_key(image_id), data, content_type=f"image/{fmt}")
        # As ingest does: the pending manifest exists before the job is published.
        pending = Manifest(
            id=image_id, status=Status.PENDING, source=job.source, created_at=0.0, updated_at=0.0
        )
        await save_manifest(store, pending)
        return Message(image_id, job.encode(), {"request-id": request_id})

    good, bad = small_jpeg(), png_declaring(64, 48)
    good_message = await job_message(good, "jpeg", "req-good")
    bad_message = await job_message(bad, "png", "req-bad")

    before = {
        "ready": value("pinhole_jobs_processed_total", result="ready"),
        "failed": value("pinhole_jobs_processed_total", result="failed"),
        "undecodable": value("pinhole_jobs_dead_lettered_total", reason="undecodable-image"),
        "malformed": value("pinhole_jobs_dead_lettered_total", reason="malformed-job"),
        "ready_seconds": value("pinhole_upload_to_ready_seconds_count"),
        "avif": value("pinhole_transcode_seconds_count", preset="236x", format="avif"),
    }
    deliveries = [
        FakeDelivery(good_message),
        FakeDelivery(bad_message),
        FakeDelivery(Message("junk", b"{not json", {"request-id": "req-junk"})),
    ]
    try:
        for delivery in deliveries:
            await transcoder.handle(delivery)
    finally:
        transcoder.pool.shutdown()

    assert all(d.acked == [True] for d in deliveries)
    assert value("pinhole_jobs_processed_total", result="ready") == before["ready"] + 1
    assert value("pinhole_jobs_processed_total", result="failed") == before["failed"] + 2
    assert (
        value("pinhole_jobs_dead_lettered_total", reason="undecodable-image")
        == before["undecodable"] + 1
    )
    assert (
        value("pinhole_jobs_dead_lettered_total", reason="malformed-job") == before["malformed"] + 1
    )
    assert value("pinhole_upload_to_ready_seconds_count") == before["ready_seconds"] + 1
    assert (
        value("pinhole_transcode_seconds_count", preset="236x", format="avif") == before["avif"] + 1
    )
    assert value("pinhole_jobs_in_flight") == 0

    events = [json.loads(m.value) for m in queue.messages(settings.kafka.events_topic)]
    assert [(e["type"], e["request_id"]) for e in events] == [
        ("image.ready", "req-good"),
        ("image.failed", "req-bad"),
    ]
    assert [m.headers["request-id"] for m in queue.messages(settings.kafka.events_topic)] == [
        "req-good",
        "req-bad",
    ]

    records = [json.loads(line) for line in json_log]
    by_message = {(r["msg"], r.get("request_id")) for r in records}
    assert ("image ready", "req-good") in by_message
    assert ("job dead-lettered", "req-bad") in by_message
    assert ("job dead-lettered", "req-junk") in by_message
    # Every line logged while a job was in hand names its request.
    assert all(r.get("request_id") for r in records), records
