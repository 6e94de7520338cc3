"""``pinhole top``: parsing of the exposition format and the rate arithmetic."""

from __future__ import annotations

import math

import pytest

from pinhole.app.top import Rates, metrics_url, parse_samples, rates, render

BEFORE = """\
# HELP pinhole_uploads_total Upload requests by result
# TYPE pinhole_uploads_total counter
pinhole_uploads_total{result="accepted"} 10.0
pinhole_uploads_total{result="unsupported-media-type"} 2.0
# HELP pinhole_uploads_created Upload requests by result
# TYPE pinhole_uploads_created gauge
pinhole_uploads_created{result="accepted"} 1.7e+09
# TYPE pinhole_upload_bytes_total counter
pinhole_upload_bytes_total{result="accepted"} 1048576.0
# TYPE pinhole_http_requests_total counter
pinhole_http_requests_total{method="GET",route="/healthz",service="edge",status="200"} 100.0
pinhole_http_requests_total{method="GET",route="unmatched",service="edge",status="503"} 4.0
# TYPE pinhole_cache_requests_total counter
pinhole_cache_requests_total{result="hit",tier="l1"} 50.0
pinhole_cache_requests_total{result="miss",tier="l1"} 50.0
pinhole_cache_requests_total{result="hit",tier="redis"} 10.0
pinhole_cache_requests_total{result="miss",tier="redis"} 40.0
pinhole_cache_requests_total{result="hit",tier="storage"} 40.0
# TYPE pinhole_jobs_processed_total counter
pinhole_jobs_processed_total{result="ready"} 8.0
# TYPE pinhole_jobs_in_flight gauge
pinhole_jobs_in_flight 1.0
# TYPE pinhole_consumer_lag gauge
pinhole_consumer_lag{partition="0",topic="pinhole.jobs"} 3.0
pinhole_consumer_lag{partition="1",topic="pinhole.jobs"} 4.0
# TYPE pinhole_http_request_seconds histogram
pinhole_http_request_seconds_bucket{le="0.1",route="/healthz",service="edge",status="200"} 3.0
"""

# Ten seconds later.
AFTER = """\
# TYPE pinhole_uploads_total counter
pinhole_uploads_total{result="accepted"} 30.0
pinhole_uploads_total{result="unsupported-media-type"} 2.0
# TYPE pinhole_upload_bytes_total counter
pinhole_upload_bytes_total{result="accepted"} 11534336.0
# TYPE pinhole_http_requests_total counter
pinhole_http_requests_total{method="GET",route="/healthz",service="edge",status="200"} 140.0
pinhole_http_requests_total{method="GET",route="unmatched",service="edge",status="503"} 14.0
# TYPE pinhole_cache_requests_total counter
pinhole_cache_requests_total{result="hit",tier="l1"} 110.0
pinhole_cache_requests_total{result="miss",tier="l1"} 90.0
pinhole_cache_requests_total{result="hit",tier="redis"} 30.0
pinhole_cache_requests_total{result="miss",tier="redis"} 60.0
pinhole_cache_requests_total{result="hit",tier="storage"} 60.0
# TYPE pinhole_jobs_processed_total counter
pinhole_jobs_processed_total{result="ready"} 28.0
pinhole_jobs_processed_total{result="failed"} 1.0
# TYPE pinhole_jobs_in_flight gauge
pinhole_jobs_in_flight 2.0
# TYPE pinhole_consumer_lag gauge
pinhole_consumer_lag{partition="0",topic="pinhole.jobs"} 0.0
pinhole_consumer_lag{partition="1",topic="pinhole.jobs"} 5.0
"""


def test_parse_keeps_only_pinhole_samples_it_reads() -> None:
    samples = parse_samples(BEFORE)
    assert samples["pinhole_uploads_total"] == {
        frozenset({("result", "accepted")}): 10.0,
        frozenset({("result", "unsupported-media-type")}): 2.0,
    }
    assert "pinhole_uploads_created" not in samples
    assert "pinhole_http_request_seconds_bucket" not in samples
    assert samples["pinhole_jobs_in_flight"] == {frozenset(): 1.0}


def test_rates_between_two_scrapes() -> None:
    r = rates({"a": parse_samples(BEFORE)}, {"a": parse_samples(AFTER)}, 10.0)
    assert r.uploads == pytest.approx(2.0)
    assert r.upload_bytes == pytest.approx(1024 * 1024)
    assert r.requests == pytest.approx(5.0)
    assert r.errors_5xx == pytest.approx(1.0)
    assert r.jobs_ready == pytest.approx(2.0)
    # A series that first appears in the second scrape counts from zero.
    assert r.jobs_failed == pytest.approx(0.1)
    # 100 L1 lookups: 60 L1 hits and 20 Redis hits were answered from a cache.
    assert r.cache_hit_ratio == pytest.approx(0.8)
    assert r.tier_hit_ratio["l1"] == pytest.approx(0.6)
    assert r.tier_hit_ratio["redis"] == pytest.approx(20 / 40)
    assert r.tier_hit_ratio["storage"] == pytest.approx(1.0)
    # Gauges are read, not differenced.
    assert r.jobs_in_flight == 2.0
    assert r.consumer_lag == 5.0


def test_a_restarted_process_counts_as_a_reset_not_a_drop() -> None:
    restarted = AFTER.replace(
        'pinhole_uploads_total{result="accepted"} 30.0',
        'pinhole_uploads_total{result="accepted"} 3.0',
    )
    r = rates(
        {"a": parse_samples(BEFORE), "b": parse_samples(BEFORE)},
        {"a": parse_samples(restarted), "b": parse_samples(AFTER)},
        10.0,
    )
    # a restarted: 3 new uploads since; b: 20 more. Summed per endpoint, never negative.
    assert r.uploads == pytest.approx((3 + 20) / 10)
    assert r.requests == pytest.approx(2 * 5.0)


def test_an_endpoint_missing_from_a_round_adds_nothing() -> None:
    r = rates(
        {"a": parse_samples(BEFORE)}, {"a": parse_samples(AFTER), "b": parse_samples(AFTER)}, 10.0
    )
    assert r.uploads == pytest.approx(2.0)
    # Its gauges are current, though.
    assert r.jobs_in_flight == 4.0


def test_no_lookups_means_no_ratio() -> None:
    r = rates({"a": parse_samples(BEFORE)}, {"a": parse_samples(BEFORE)}, 5.0)
    assert r.uploads == 0.0
    assert math.isnan(r.cache_hit_ratio)
    with pytest.raises(ValueError, match="apart"):
        rates({}, {}, 0.0)


def test_metrics_url() -> None:
    assert metrics_url("http://edge:8080") == "http://edge:8080/metrics"
    assert metrics_url("http://edge:8080/") == "http://edge:8080/metrics"
    assert metrics_url("edge:8080") == "http://edge:8080/metrics"
    assert metrics_url("http://edge:8080/custom/metrics") == "http://edge:8080/custom/metrics"


def test_render_shows_every_headline_number() -> None:
    r = rates({"a": parse_samples(BEFORE)}, {"a": parse_samples(AFTER)}, 10.0)
    text = render(r, {"http://a/metrics": "ok", "http://b/metrics": "down (refused)"})
    assert "uploads/s" in text
    assert "2.00" in text
    assert "requests/s" in text
    assert "80.0%" in text
    assert "1.0 MiB/s in" in text
    assert "down (refused)" in text
    empty = render(Rates(seconds=2.0), {})
    assert "   -" in empty
