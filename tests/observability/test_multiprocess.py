"""Several edge processes on one host share a metrics directory, and any one
of them reports the sum (prometheus-client multiprocess mode)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from metrics import hot
from tests.support.processes import PinholeProcess, start_pinhole

pytestmark = pytest.mark.slow

ROUTE = "/{preset}/{a}/{b}/{c}/{name}"
MISSING = f"/236x/00/00/00/{'0' * 32}.jpg"


@dataclass
class Edges:
    a: PinholeProcess
    b: PinholeProcess
    metrics_dir: Path


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edges]:
    root = tmp_path_factory.mktemp("multiproc")
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(root / "metrics"),
        "PINHOLE_STORAGE": f"file://{root / 'store'}",
        "PINHOLE_QUEUE": "memory://",
        "PINHOLE_CACHE": "memory://",
    }
    started: list[PinholeProcess] = []
    try:
        for _ in range(2):
            started.append(start_pinhole("serve", env, root))
        yield Edges(started[0], started[1], root / "metrics")
    finally:
        for process in started:
            process.stop()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def scrape(process: PinholeProcess) -> str:
    status, text = get(f"{process.url}/metrics")
    assert status == 200, text
    return text


def scrape_when_flushed(process: PinholeProcess, expected_requests: float) -> str:
    """A scrape flushes its own process's hot counts; the others flush each
    ``hot.FLUSH_SECONDS``, so their counts may arrive one interval later."""
    deadline = time.monotonic() + 5 * hot.FLUSH_SECONDS
    while True:
        text = scrape(process)
        count = sample(text, "pinhole_http_requests_total", route=ROUTE, method="GET", status="404")
        if count >= expected_requests or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_each_process_reports_the_sum_of_all(edges: Edges) -> None:
    a, b = edges.a, edges.b
    assert a.proc.pid != b.proc.pid
    for process, count in ((a, 3), (b, 5)):
        for _ in range(count):
            status, body = get(process.url + MISSING)
            assert status == 404, body
    for process in (a, b):
        text = scrape_when_flushed(process, 8)
        requests = sample(
            text,
            "pinhole_http_requests_total",
            service="edge",
            route=ROUTE,
            method="GET",
            status="404",
        )
        assert requests == 8, process.log_tail()
        assert sample(text, "pinhole_http_errors_total", service="edge", code="not-found") == 8
        assert (
            sample(
                text,
                "pinhole_http_request_seconds_count",
                service="edge",
                route=ROUTE,
                status="404",
            )
            == 8
        )
        assert sample(text, "pinhole_cache_requests_total", tier="storage", result="miss") == 8
        # Gauges are combined as declared (livesum), not listed once per pid.
        assert sample(text, "pinhole_jobs_in_flight") == 0
        assert "pid=" not in text


def test_a_stopped_process_s_counts_are_kept(edges: Edges) -> None:
    a, b = edges.a, edges.b
    live_files = f"*live*_{b.proc.pid}.db"
    assert list(edges.metrics_dir.glob(live_files))
    before = sample(
        scrape(a), "pinhole_http_requests_total", route=ROUTE, method="GET", status="404"
    )
    assert get(b.url + MISSING)[0] == 404
    assert b.stop() == 0, b.log_tail()
    after = sample(
        scrape(a), "pinhole_http_requests_total", route=ROUTE, method="GET", status="404"
    )
    # Counters of a finished process still count: rate() must not see a drop.
    assert after == before + 1
    # Its live gauges (jobs in flight) are gone with it.
    assert not list(edges.metrics_dir.glob(live_files))
