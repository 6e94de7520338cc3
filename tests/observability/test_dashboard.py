"""The dashboard's shape and provisioning, without a server (the queries
themselves are run against a real Prometheus in test_observed_pipeline)."""

from __future__ import annotations

import re

import yaml  # type: ignore[import-untyped]
from prometheus_client import REGISTRY

import metrics.definitions  # noqa: F401  (registers every metric)
from tests.support.dashboard import (
    GRAFANA_DIR,
    all_values,
    load_dashboard,
    panels,
    queries,
    substitute,
)

_METRIC = re.compile(r"\bpinhole_[a-z_]+")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exported_names() -> set[str]:
    names: set[str] = set()
    for collector in list(REGISTRY._collector_to_names):
        for family in collector.collect():
            if family.type == "gauge":
                names.add(family.name)
            names.update(sample.name for sample in family.samples)
            if family.type == "histogram":
                names.update(family.name + suffix for suffix in _HISTOGRAM_SUFFIXES)
            if family.type == "counter":
                names.add(family.name + "_total")
    return names


def test_every_panel_queries_defined_metrics_through_the_variables() -> None:
    dashboard = load_dashboard()
    found = queries(dashboard)
    assert len(found) >= 20
    known = exported_names()
    for query in found:
        used = set(_METRIC.findall(query.expr))
        assert used, query
        assert used <= known, f"{query}: unknown {sorted(used - known)}"
        assert 'instance=~"$instance"' in query.expr, query
        if "rate(" in query.expr:
            assert "[$__rate_interval]" in query.expr, query
        # Every variable resolves.
        substitute(query.expr, all_values(dashboard))


def test_the_issue_s_panels_are_there() -> None:
    titles = {p["title"] for p in panels(load_dashboard())}
    for wanted in (
        "Uploads/s",
        "Jobs/s",
        "HTTP requests/s",
        "Bytes/s",
        "HTTP latency p50 / p95 / p99 by route",
        "Upload to ready",
        "Transcode seconds by format (p95)",
        "Cache hit ratio per tier",
        "Consumer lag",
        "Dead letters/s",
        "Errors by code",
    ):
        assert wanted in titles


def test_panels_use_the_datasource_variable_and_have_unique_ids() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["includeAll"]
    assert instance["multi"]
    assert instance["allValue"] == ".*"
    assert instance["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["description"], panel["title"]
    assert dashboard["uid"] == "pinhole"


def test_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    provisioning = GRAFANA_DIR / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    dashboards = yaml.safe_load((provisioning / "dashboards" / "pinhole.yml").read_text())
    [provider] = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
