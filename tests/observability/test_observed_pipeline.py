"""The dashboard and alerts, proven on a real Prometheus that scraped the real pipeline.

Ingest, transcoder and two edge processes (sharing a multiprocess metrics
directory, as ``serve --workers`` does) run as OS processes on the real broker
(tansu), S3 server (moto) and Redis. A real Prometheus scrapes them every
second with the shipped scrape config and alert rules. Traffic comes in two
rounds (uploads of real photos, an image the transcoder dead-letters, cache
misses and hits on every tier, errors), so every labelled series exists before
the second round moves it and every rate has something to measure. Then every
query of every dashboard panel must return data.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer

from ingest.auth import token_digest
from tests.support import badinput
from tests.support.dashboard import all_values, load_dashboard, queries, substitute
from tests.support.photos import Photo, load_photo
from tests.support.pipeline import upload, wait_ready
from tests.support.processes import PinholeProcess, stack_env, start_pinhole
from tests.support.prom import Prometheus, has_finite_value, scrape_config, start_prometheus
from tests.support.services import MotoS3, RedisServer, TansuBroker, free_port

pytestmark = pytest.mark.slow

TOKEN = "observability-token"
TOPICS = {"jobs": "obs.jobs", "events": "obs.events", "dlq": "obs.jobs.dlq"}


@dataclass
class Stack:
    ingest: PinholeProcess
    transcode: PinholeProcess
    edge_a: PinholeProcess
    edge_b: PinholeProcess
    cdn_purge: PinholeProcess
    webhooks: PinholeProcess
    prometheus: Prometheus
    tansu: TansuBroker

    @property
    def processes(self) -> list[PinholeProcess]:
        return [
            self.ingest,
            self.transcode,
            self.edge_a,
            self.edge_b,
            self.cdn_purge,
            self.webhooks,
        ]


@dataclass
class Traffic:
    """What the rounds did: request id and image id of each upload, by outcome."""

    ready: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def stack(
    tansu: TansuBroker,
    moto_s3: MotoS3,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("observed")
    ingest_port, edge_port = free_port(), free_port()
    env = stack_env(
        storage=moto_s3.url("pinhole-observed"),
        queue=tansu.url,
        cache=redis_server.url,
        ingest_port=ingest_port,
        edge_port=edge_port,
        token_sha256=token_digest(TOKEN),
        topic_prefix="obs",
        partitions=2,
    )
    edge_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(root / "edge-metrics")}
    started: list[PinholeProcess] = []
    prometheus: Prometheus | None = None
    try:
        started.append(start_pinhole("ingest", env, root, port=ingest_port))
        started.append(start_pinhole("transcode", env, root))
        started.append(start_pinhole("serve", edge_env, root, port=edge_port))
        started.append(start_pinhole("serve", edge_env, root))
        # Scraped like every role. No CDN here and no delete in the traffic: it
        # only has to stay up and report (tests/cdn purges real caches).
        purge_env = {
            **env,
            "PINHOLE_CDN_PURGE__VARNISH_URLS": f'["http://127.0.0.1:{free_port()}"]',
        }
        started.append(start_pinhole("cdn-purge", purge_env, root))
        # Webhooks to an endpoint that refuses them (POST on ingest's /healthz
        # answers 405): every event is tried, retried and dead-lettered.
        hooks_env = {
            **env,
            "PINHOLE_WEBHOOKS__ENDPOINTS": json.dumps(
                {
                    "refusing": {
                        "url": f"http://127.0.0.1:{ingest_port}/healthz",
                        "secret": "whsec_" + base64.b64encode(b"o" * 32).decode(),
                    }
                }
            ),
            "PINHOLE_WEBHOOKS__RETRY_SCHEDULE_SECONDS": "[0.1]",
            "PINHOLE_WEBHOOKS__ALLOW_LOOPBACK": "true",
        }
        started.append(start_pinhole("webhooks", hooks_env, root))
        ingest, transcode, edge_a, edge_b, cdn_purge, webhooks = started
        # One edge target: any edge worker reports every worker sharing its directory.
        config = scrape_config(
            {
                "ingest": f"127.0.0.1:{ingest.port}",
                "transcoder": f"127.0.0.1:{transcode.port}",
                "server": f"127.0.0.1:{edge_a.port}",
                "cdn-purge": f"127.0.0.1:{cdn_purge.port}",
                "webhooks": f"127.0.0.1:{webhooks.port}",
            }
        )
        prometheus = start_prometheus(config, root)
        yield Stack(ingest, transcode, edge_a, edge_b, cdn_purge, webhooks, prometheus, tansu)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for process in started:
            process.stop()


async def _upload(
    session: aiohttp.ClientSession, stack: Stack, data: bytes, request_id: str
) -> dict[str, Any]:
    headers = {
        "Content-Type": "application/octet-stream",
        "Authorization": f"Bearer {TOKEN}",
        "X-Request-ID": request_id,
    }
    async with session.post(f"{stack.ingest.url}/v1/images", data=data, headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        assert resp.headers["X-Request-ID"] == request_id
        body: dict[str, Any] = await resp.json()
    return body


async def _get(
    session: aiohttp.ClientSession,
    url: str,
    status: int,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> aiohttp.ClientResponse:
    async with session.request(method, url, headers=headers or {}) as resp:
        await resp.read()
        assert resp.status == status, (url, resp.status, await resp.text())
        return resp


async def _fetch_variants(
    session: aiohttp.ClientSession, stack: Stack, manifest: dict[str, Any]
) -> None:
    """Storage on first sight, then L1; the other edge process finds it in Redis."""
    for variant in manifest["variants"][:3]:
        url_a = variant["url"]
        url_b = url_a.replace(stack.edge_a.url, stack.edge_b.url)
        await _get(session, url_a, 200)  # storage hit, fills L1 and Redis
        first = await _get(session, url_a, 200)  # L1 hit
        await _get(session, url_b, 200)  # Redis hit (B's L1 is empty)
        await _get(session, url_b, 200)  # L1 hit in B
        await _get(session, url_a, 304, {"If-None-Match": first.headers["ETag"]})
        await _get(session, url_a, 200, method="HEAD")
    negotiated = manifest["urls"]["474x"]
    await _get(session, negotiated, 200, {"Accept": "image/avif,image/webp,*/*"})
    await _get(session, negotiated, 200, {"Accept": "image/webp,*/*"})


async def _errors(session: aiohttp.ClientSession, stack: Stack, failed_id: str) -> None:
    edge, ingest = stack.edge_a.url, stack.ingest.url
    await _get(session, f"{edge}/474x/00/00/00/{'0' * 32}.jpg", 404)  # not-found
    fan = f"{failed_id[0:2]}/{failed_id[2:4]}/{failed_id[4:6]}"
    await _get(session, f"{edge}/236x/{fan}/{failed_id}.jpg", 404)  # image-failed
    await _get(session, f"{edge}/999x/{fan}/{failed_id}.jpg", 404)
    await _get(session, f"{ingest}/v1/images/{'0' * 32}", 404)
    async with session.post(
        f"{ingest}/v1/images",
        data=badinput.TEXT_AS_JPEG,
        headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {TOKEN}"},
    ) as resp:
        assert resp.status == 415
    async with session.post(
        f"{ingest}/v1/images", data=badinput.small_jpeg(), headers={"Content-Type": "image/jpeg"}
    ) as resp:
        assert resp.status == 401


async def _round(
    session: aiohttp.ClientSession,
    stack: Stack,
    photos: list[Photo],
    undecodable: bytes,
    traffic: Traffic,
) -> None:
    accepted: list[tuple[str, dict[str, Any]]] = []
    for photo in photos:
        request_id = f"obs-{uuid.uuid4().hex}"
        accepted.append((request_id, await _upload(session, stack, photo.data, request_id)))
    # Passes ingest's header checks, fails the transcoder's full decode: dead-lettered.
    bad_id = f"obs-bad-{uuid.uuid4().hex}"
    bad = await _upload(session, stack, undecodable, bad_id)
    for request_id, body in accepted:
        manifest = await wait_ready(session, body["status_url"], within_seconds=120)
        assert manifest["status"] == "ready", manifest
        traffic.ready[request_id] = manifest["id"]
        await _fetch_variants(session, stack, manifest)
    failed = await wait_ready(session, bad["status_url"], within_seconds=120)
    assert failed["status"] == "failed", failed
    traffic.failed[bad_id] = failed["id"]
    # A duplicate of a ready image.
    status, _ = await upload(session, stack.ingest.url, photos[0], TOKEN)
    assert status == 200
    await _errors(session, stack, failed["id"])


@pytest.fixture(scope="module")
async def traffic(stack: Stack) -> Traffic:
    done = Traffic()
    # Every target answers before any traffic: the rounds start from a known baseline.
    await asyncio.to_thread(stack.prometheus.wait_scraped_after, time.time())
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await _round(
            session,
            stack,
            [load_photo("flow-dark-720x1440-portrait.jpg")],
            badinput.png_declaring(64, 48),
            done,
        )
        # The second round moves series the first one created.
        await asyncio.to_thread(stack.prometheus.wait_scraped_after, time.time())
        await _round(
            session,
            stack,
            [load_photo("kay-dark-1080x1920-alpha.png"), load_photo("autumn-2560x1600.jpg")],
            badinput.png_declaring(48, 64),
            done,
        )
    await asyncio.to_thread(stack.prometheus.wait_scraped_after, time.time() + 1)
    return done


def test_every_dashboard_query_returns_data(stack: Stack, traffic: Traffic) -> None:
    dashboard = load_dashboard()
    values = all_values(dashboard)
    empty: list[str] = []
    for query in queries(dashboard):
        result = stack.prometheus.query(substitute(query.expr, values))
        if not has_finite_value(result):
            empty.append(f"{query}\n    -> {result}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    # The instance variable lists every scraped role: ingest, transcoder, the
    # edge (both workers report through one), the CDN purger and webhooks.
    instances = stack.prometheus.api(
        "label/instance/values", **{"match[]": "pinhole_http_requests_total"}
    )
    assert len(instances) == 5


def test_consumer_lag_and_dead_letters_are_seen(stack: Stack, traffic: Traffic) -> None:
    lag = stack.prometheus.query(f'pinhole_consumer_lag{{topic="{TOPICS["jobs"]}"}}')
    assert lag, "no consumer lag series"
    assert {series["metric"]["job"] for series in lag} == {"transcoder"}
    # Everything was processed: nothing left behind.
    assert all(float(series["value"][1]) == 0 for series in lag)
    dead = stack.prometheus.query("sum(pinhole_jobs_dead_lettered_total)")
    assert float(dead[0]["value"][1]) == 2
    edge = stack.prometheus.query('sum by (tier) (pinhole_cache_requests_total{result="hit"})')
    assert {series["metric"]["tier"] for series in edge} == {"l1", "redis", "storage"}


def test_alert_rules_evaluate_on_real_data(stack: Stack, traffic: Traffic) -> None:
    groups = stack.prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 6
    for rule in rules:
        assert rule["health"] == "ok", rule
    deadline = time.monotonic() + 20
    while True:
        firing = {
            alert["labels"]["alertname"]
            for alert in stack.prometheus.api("alerts")["alerts"]
            if alert["state"] == "firing"
        }
        expected = {"PinholeDeadLetters", "PinholeWebhooksDeadLettered"}
        if expected <= firing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # The poison images were dead-lettered, and so was every webhook to the
    # endpoint that refuses them; nothing else is wrong with this pipeline.
    assert firing == {"PinholeDeadLetters", "PinholeWebhooksDeadLettered"}


def _json_lines(process: PinholeProcess) -> list[dict[str, Any]]:
    out = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


async def _events(stack: Stack) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        TOPICS["events"],
        bootstrap_servers=stack.tansu.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    events: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(60):
            while len(events) < 5:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    events.extend(json.loads(record.value) for record in records)
    finally:
        await consumer.stop()
    return events


async def test_request_id_follows_an_upload_across_processes(
    stack: Stack, traffic: Traffic
) -> None:
    ingest_lines = _json_lines(stack.ingest)
    transcoder_lines = _json_lines(stack.transcode)
    events = await _events(stack)
    for request_id, image_id in traffic.ready.items():
        accepted = [line for line in ingest_lines if line.get("request_id") == request_id]
        assert any(
            line["msg"] == "upload accepted" and line["image_id"] == image_id for line in accepted
        ), accepted
        job_lines = [line for line in transcoder_lines if line.get("request_id") == request_id]
        assert any(
            line["msg"] == "image ready" and line["image_id"] == image_id for line in job_lines
        ), job_lines
        [ready] = [e for e in events if e["id"] == image_id and e["type"] == "image.ready"]
        assert ready["request_id"] == request_id
    for request_id, image_id in traffic.failed.items():
        job_lines = [line for line in transcoder_lines if line.get("request_id") == request_id]
        assert any(
            line["msg"] == "job dead-lettered" and line["reason"] == "undecodable-image"
            for line in job_lines
        ), job_lines
        [failed] = [e for e in events if e["id"] == image_id and e["type"] == "image.failed"]
        assert failed["request_id"] == request_id
    # No job line of the transcoder goes without its request id.
    for line in transcoder_lines:
        if line["msg"] in ("image ready", "job dead-lettered", "already processed"):
            assert line.get("request_id"), line


def test_pinhole_top_reads_the_live_endpoints(stack: Stack, traffic: Traffic) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pinhole.app.cli",
            "top",
            "--count",
            "1",
            "--interval",
            "0.5",
            stack.ingest.url,
            stack.transcode.url,
            f"{stack.edge_a.url}/metrics",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for heading in ("uploads/s", "jobs/s", "requests/s", "cache hits"):
        assert heading in out, out
    assert out.count(" ok") == 3, out


def test_processes_stayed_up(stack: Stack, traffic: Traffic) -> None:
    for process in stack.processes:
        assert process.proc.poll() is None, process.log_tail()
        assert "Traceback" not in Path(process.log_path).read_text(), process.log_tail()
